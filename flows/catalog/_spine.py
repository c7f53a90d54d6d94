"""The shared spine of the built-in flows: angle, fold, synthesis and validation steps.

DESIGN §3a: several angles run in parallel, a code step folds their evidence,
a synthesizer writes the answer and an adversarial validator attacks it. The
builders here write the parts every flow words the same way (the evidence
rules, the synthesis and validation instructions); each flow module writes its
own angle tasks, which is where the flows differ.

Prompts are written for a local instruction-tuned model such as Qwen: say what
to look at, what to produce in which sections, and exactly which frontmatter
fields to emit when a later ``when`` or ``$step.output.field`` reads them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flows.model import Step, agent, code

# Local models are slow on long contexts; a stuck call should still end.
ANGLE_TIMEOUT_S = 900.0
SYNTHESIS_TIMEOUT_S = 900.0
# A fold is pure and fast: if it takes this long, it is looping, and retrying
# a deterministic function would only loop again.
FOLD_TIMEOUT_S = 30.0

EVIDENCE_RULES = """\
Evidence rules:
- Put each piece of evidence on its own line, numbered in the order you cite it:
  `E1: <what you saw> (source: <path:line, URL or command>; trust: direct|reported|inferred)`.
  For code, quote the line exactly: `E1: "retries = 3" (source: src/app.py:42; trust: direct)`, or cite
  `path:start-end` for a range; the quote is checked against the repository.
  `direct` = you read or ran it yourself; `reported` = stated by the question or another
  answer, not re-checked; `inferred` = reasoned from other items (name them).
- Tie every finding to its items, e.g. "(E2, E3)".
- If you looked and found nothing, write the line "No evidence found." and say where you looked.
- Anything you could not check goes under a final `## Deferred (unverified)` heading,
  never among the findings."""


def angle(
    step_id: str,
    *,
    persona: str,
    label: str,
    task: str,
    produce: str,
    bands: Iterable[str] | None = None,
    deps: Iterable[str] | None = None,
    **options: Any,
) -> Step:
    """One parallel angle: the question, what to examine, what to produce, the evidence rules.

    Angles retry once (a local server dropping a long stream is the usual
    failure) and time out after ``ANGLE_TIMEOUT_S``.
    """
    prompt = f"Question: $input.question\n\n{task.strip()}\n\nProduce:\n{produce.strip()}\n\n{EVIDENCE_RULES}"
    options.setdefault("retries", 1)
    options.setdefault("retry_delay_s", 5.0)
    options.setdefault("timeout_s", ANGLE_TIMEOUT_S)
    return agent(step_id, persona=persona, label=label, prompt=prompt, bands=bands, deps=deps, **options)


TOOLS_NOTE = """\
If you were given tools (list_files, read_file, search, git_log, git_diff), read the repository with them
before you answer: look up every path you cite and quote lines exactly as read_file shows them (without the
line number). If you have no tools, the run has no project: answer from the question alone, say so in
your first sentence, and mark what you could not check as `reported` or `inferred`."""


def code_angle(step_id: str, *, task: str, **options: Any) -> Step:
    """An :func:`angle` that reads the run's project with the read-only tools when it has one (DESIGN §11)."""
    return angle(step_id, task=f"{task.strip()}\n\n{TOOLS_NOTE}", tools=True, **options)


def fold(
    fn: Callable[..., Any],
    angles: Iterable[str],
    *,
    step_id: str = "fold",
    label: str = "Fold the evidence",
    **options: Any,
) -> Step:
    """The code step that folds ``angles`` with ``fn`` (a module-level function of ctx)."""
    options.setdefault("timeout_s", FOLD_TIMEOUT_S)
    return code(step_id, fn=fn, deps=list(angles), label=label, **options)


_SYNTHESIS_RULES = """\
Rules:
- Use only the evidence above and cite it by its number, e.g. (E3, E7). Do not renumber it
  and do not add items of your own.
- An angle listed under "Angles that found nothing" is a gap in coverage, not proof that
  all is well: say what it leaves open.
- If the evidence count is 0, say so plainly and recommend how to look further instead of
  answering from general knowledge.
- Where angles disagree, say which side the evidence favours and why.
- Claims no item supports go under a final `## Deferred (unverified)` heading."""


def synthesis(
    *,
    task: str,
    sections: str,
    fields: str = "confidence (one of low, medium, high) and summary (the answer in one line)",
    step_id: str = "synthesize",
    persona: str = "synthesizer",
    label: str = "Synthesize the answer",
    evidence: str = "fold",
    deps: Iterable[str] | None = None,
    **options: Any,
) -> Step:
    """The step that writes the answer from the folded evidence of step ``evidence``."""
    prompt = (
        f"Question: $input.question\n\n{task.strip()}\n\n"
        "Folded evidence from the parallel angles (numbered E1, E2, ... across all angles; "
        "each angle's report below uses the same numbers):\n\n"
        f"${evidence}.output\n\n"
        f"Write, in this order:\n{sections.strip()}\n\n{_SYNTHESIS_RULES}\n\n"
        f"Begin with a YAML frontmatter block (first line `---`) with exactly these fields: {fields}."
    )
    options.setdefault("retries", 1)
    options.setdefault("retry_delay_s", 5.0)
    options.setdefault("timeout_s", SYNTHESIS_TIMEOUT_S)
    return agent(step_id, persona=persona, label=label, prompt=prompt,
                 deps=list(deps) if deps is not None else [evidence], **options)


def validation(
    *,
    target: str = "synthesize",
    evidence: str = "fold",
    step_id: str = "validate",
    label: str = "Attack the answer",
    focus: str = "",
    evidence_text: str | None = None,
    deps: Iterable[str] | None = None,
    **options: Any,
) -> Step:
    """The adversarial validator: attacks ``target``'s answer against ``evidence``'s ledger.

    ``evidence_text`` replaces ``$<evidence>.output`` when the evidence is not
    one step's output (a flow without a fold). It emits ``verdict`` (upheld /
    weakened / refuted) in its frontmatter; the report shows it above the
    recommendation.
    """
    ledger = evidence_text.strip() if evidence_text is not None else f"${evidence}.output"
    extra = f"\n5. {focus.strip()}" if focus.strip() else ""
    prompt = (
        "You are checking an answer before anyone acts on it. Attack it.\n\n"
        "Question: $input.question\n\n"
        f"## The answer under attack\n\n${target}.output\n\n"
        f"## The evidence it may cite\n\n{ledger}\n\n"
        "Check, claim by claim:\n"
        "1. Does every cited item exist in the evidence list, and does it say what the answer says it does?\n"
        "2. Does a conclusion go further than its evidence (a strong claim on one `reported` or "
        "`inferred` item; an angle that found nothing read as \"all is well\")?\n"
        "3. Which case, rival explanation or angle does the answer ignore?\n"
        f"4. Which recommendation would do harm if its premise were wrong?{extra}\n\n"
        "Begin with a YAML frontmatter block (first line `---`) with exactly these fields: "
        "verdict (one of upheld, weakened, refuted) and summary (the strongest objection, in one line).\n"
        "Then `## Objections`: one entry per objection, naming the claim it targets and the evidence "
        "items (or the missing evidence) behind it. If every claim survives, list the checks you made.\n\n"
        f"{EVIDENCE_RULES}"
    )
    options.setdefault("retries", 1)
    options.setdefault("retry_delay_s", 5.0)
    options.setdefault("timeout_s", SYNTHESIS_TIMEOUT_S)
    return agent(step_id, persona="validator", label=label, prompt=prompt,
                 deps=list(deps) if deps is not None else [target], **options)
