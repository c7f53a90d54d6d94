"""The ``offline`` backend: deterministic text from persona and prompt, no model.

For demos and tests. Every answer says what it is, twice: ``backend: offline``
in its frontmatter and a label as the first line of its body, so nobody
mistakes it for a model's judgement. The same persona and prompt always give
the same text; the frontmatter carries the fields the shipped flows test
(``severity`` for the triager, ``verdict`` for the validator, ``summary`` and
``confidence`` for everyone), and the body follows the evidence discipline of
DESIGN §3a: numbered evidence with source and trust class, or "No evidence
found.", and a ``## Deferred (unverified)`` section.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from typing import Any

import yaml

from actors.agents.base import (
    AgentRequest,
    AgentResult,
    Cancelled,
    CancelToken,
    DeltaCallback,
)

LABEL = "[offline backend: deterministic text, no model was called]"
MODEL = "offline-deterministic"

# Words a triager treats as a security problem. The generated text itself must
# never contain them, or a downstream triager would react to our boilerplate.
_CRITICAL = re.compile(r"\b(injection|rce|exploit|secret|credential)", re.IGNORECASE)
_HIGH = re.compile(r"\b(auth|overflow|vulnerab|xss|csrf|privilege|leak)", re.IGNORECASE)
_LOW = re.compile(r"\b(typo|docs?\b|documentation|readme|style|spelling|comment)",
                  re.IGNORECASE)
_PERF = re.compile(r"\b(slow|latency|memory|performance|timeout|throughput)", re.IGNORECASE)
_BUG = re.compile(r"\b(crash|error|fail|exception|bug|broken|regression)", re.IGNORECASE)
_EVIDENCE_ITEM = re.compile(r"^\s*[-*]?\s*\**E\d+\b", re.MULTILINE)
_MAX_EVIDENCE = 3
_WORDS_PER_DELTA = 12


class OfflineBackend:
    """Answers every step with labelled, deterministic text; never calls a model."""

    name = "offline"
    default_model = MODEL

    def __init__(self, delay_s: float = 0.0) -> None:
        """``delay_s``: how long each answer takes (spread between its deltas), for pacing."""
        self.delay_s = delay_s

    def run(
        self, request: AgentRequest, on_delta: DeltaCallback, cancel: CancelToken
    ) -> AgentResult:
        """Stream the deterministic answer in word chunks; raise :class:`Cancelled` on cancel."""
        if cancel.cancelled:
            raise Cancelled(f"step {request.step_id} was cancelled before the call")
        text = render(request.persona, request.prompt)
        chunks = _chunks(text)
        # The delay is spread over the gaps between deltas, so the first one
        # arrives at once, like a model's first token.
        gaps = len(chunks) - 1
        pause = self.delay_s / gaps if self.delay_s > 0 and gaps else 0.0
        for i, chunk in enumerate(chunks):
            on_delta(chunk)
            if pause and i < gaps and cancel.wait(pause):
                raise Cancelled(f"step {request.step_id} was cancelled")
        if cancel.cancelled:
            raise Cancelled(f"step {request.step_id} was cancelled")
        return AgentResult(output=text, usage={}, model=MODEL)

    def close(self) -> None:
        """Nothing to release."""


def render(persona: str, prompt: str) -> str:
    """The full offline answer for ``persona`` and ``prompt`` (pure, deterministic)."""
    digest = hashlib.sha256(f"{persona}\0{prompt}".encode()).digest()
    fields = _fields(persona, prompt, digest)
    evidence = _evidence(prompt)
    lines = [
        "---",
        yaml.safe_dump(fields, sort_keys=False, allow_unicode=True, width=1000).rstrip(),
        "---",
        LABEL,
        "",
        f"## {persona or 'agent'}: findings",
        "",
        _finding(persona, fields),
        "",
        "## Evidence",
        "",
    ]
    if evidence:
        lines += [
            f"- E{n}: {json.dumps(quote, ensure_ascii=False)} (source: prompt:line {line_no}; "
            "trust: reported, quoted from the prompt as given, not re-checked)"
            for n, (line_no, quote) in enumerate(evidence, start=1)
        ]
    else:
        lines.append("No evidence found.")
    lines += [
        "",
        "## Deferred (unverified)",
        "",
        "- Every conclusion above: this backend reads only the prompt, so no file, "
        "URL or command was checked.",
        "",
    ]
    return "\n".join(lines)


def _fields(persona: str, prompt: str, digest: bytes) -> dict[str, Any]:
    fields: dict[str, Any] = {"backend": "offline", "persona": persona}
    severity = _severity(prompt)
    if persona == "triager":
        fields["severity"] = severity
        fields["category"] = _category(prompt)
    elif persona == "security-reviewer":
        fields["severity"] = severity
        fields["risk"] = "present" if severity in ("high", "critical") else "not shown"
    elif persona == "validator":
        # A synthesis that cites no numbered evidence cannot stand an attack.
        cited = bool(_EVIDENCE_ITEM.search(prompt))
        fields["verdict"] = "upheld" if cited else "weakened"
    elif persona == "reviewer":
        fields["recommendation"] = (
            "changes_requested" if severity in ("high", "critical") else "approve"
        )
    fields["summary"] = _summary(persona, prompt)
    fields["confidence"] = ("low", "medium", "high")[digest[0] % 3]
    return fields


def _severity(prompt: str) -> str:
    return _first_match(prompt, ((_CRITICAL, "critical"), (_HIGH, "high"), (_LOW, "low")), "medium")


def _category(prompt: str) -> str:
    return _first_match(prompt, ((_CRITICAL, "security"), (_HIGH, "security"), (_LOW, "documentation"),
                                 (_PERF, "performance"), (_BUG, "bug")), "general")


def _first_match(prompt: str, table: Iterable[tuple[re.Pattern[str], str]], otherwise: str) -> str:
    """The label of the first pattern found in ``prompt``, in the table's order."""
    return next((label for pattern, label in table if pattern.search(prompt)), otherwise)


def _summary(persona: str, prompt: str) -> str:
    first = next((line.strip() for line in prompt.splitlines() if line.strip()), "")
    if len(first) > 80:
        first = first[:77] + "..."
    return f"offline {persona or 'agent'} notes on: {first}" if first else (
        f"offline {persona or 'agent'} notes on an empty prompt"
    )


def _finding(persona: str, fields: dict[str, Any]) -> str:
    extra = ", ".join(
        f"{key} {value}" for key, value in fields.items()
        if key not in ("backend", "persona", "summary")
    )
    return (
        f"A placeholder {persona or 'agent'} answer ({extra}), derived from the "
        "prompt's wording alone; it stands in for a model so the flow can run."
    )


def _evidence(prompt: str) -> list[tuple[int, str]]:
    """Up to three quoted prompt lines, the most telling first, in line order."""
    lines = [(n, line.strip()) for n, line in enumerate(prompt.splitlines(), start=1)
             if line.strip() and line.strip() != "---"]
    telling = [item for item in lines if any(
        p.search(item[1]) for p in (_CRITICAL, _HIGH, _LOW, _PERF, _BUG))]
    chosen = (telling + [item for item in lines if item not in telling])[:_MAX_EVIDENCE]
    return [(n, text if len(text) <= 120 else text[:117] + "...") for n, text in sorted(chosen)]


def _chunks(text: str) -> list[str]:
    """Split into word chunks whose concatenation is exactly ``text``."""
    tokens = re.findall(r"\s*\S+\s*", text) or [text]
    return ["".join(tokens[i:i + _WORDS_PER_DELTA])
            for i in range(0, len(tokens), _WORDS_PER_DELTA)]
