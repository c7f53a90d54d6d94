"""The offline backend: deterministic, labelled, useful to the shipped flows."""

from __future__ import annotations

import threading
import time

import pytest
import yaml

from actors.agents import AgentRequest, Cancelled, CancelToken, OfflineBackend, make_backend
from actors.agents.offline import LABEL
from flows.personas import PERSONAS


def request(persona: str = "investigator", prompt: str = "Why does login fail?") -> AgentRequest:
    return AgentRequest(run_id="r1", step_id="s1", attempt=1, persona=persona,
                        system="(persona text)", prompt=prompt, model="")


def answer(persona: str, prompt: str) -> tuple[dict, str]:
    text = OfflineBackend().run(request(persona, prompt), lambda _: None, CancelToken()).output
    _, front, body = text.split("---\n", 2)
    return yaml.safe_load(front), body


def test_same_persona_and_prompt_give_the_same_text():
    backend = OfflineBackend()
    first = backend.run(request(), lambda _: None, CancelToken())
    second = backend.run(request(), lambda _: None, CancelToken())
    other = backend.run(request(prompt="Something else"), lambda _: None, CancelToken())
    assert first == second
    assert other.output != first.output
    assert first.model == "offline-deterministic"


@pytest.mark.parametrize("persona", sorted(PERSONAS))
def test_every_persona_gets_labelled_parseable_evidence_shaped_output(persona):
    fields, body = answer(persona, "Check the cache layer\nsee cache.py:10")
    assert fields["backend"] == "offline"
    assert fields["summary"].startswith(f"offline {persona} notes on: Check the cache layer")
    assert fields["confidence"] in ("low", "medium", "high")
    assert body.splitlines()[0] == LABEL
    assert '- E1: "Check the cache layer" (source: prompt:line 1; trust: reported' in body
    assert "E2" in body and "prompt:line 2" in body
    assert "## Deferred (unverified)" in body


def test_an_empty_prompt_states_that_no_evidence_was_found():
    _, body = answer("investigator", "  \n")
    assert "No evidence found." in body
    assert "E1" not in body


@pytest.mark.parametrize(("prompt", "severity", "category"), [
    ("SQL injection in the search endpoint", "critical", "security"),
    ("an AWS secret committed to the repo", "critical", "security"),
    ("Authentication bypass when the token is empty", "high", "security"),
    ("buffer overflow in the parser", "high", "security"),
    ("typo in the README", "low", "documentation"),
    ("the page is slow under load", "medium", "performance"),
    ("crash on startup", "medium", "bug"),
    ("rename a variable", "medium", "general"),
])
def test_triager_severity_follows_the_prompt(prompt, severity, category):
    fields, _ = answer("triager", prompt)
    assert fields["severity"] == severity
    assert fields["category"] == category


def test_offline_boilerplate_never_raises_a_downstream_triager():
    # An investigation of a neutral question, fed to the triager, stays medium:
    # the generated text itself carries no trigger words.
    investigation = OfflineBackend().run(
        request("investigator", "rename a variable"), lambda _: None, CancelToken()).output
    fields, _ = answer("triager", f"Classify: {investigation}")
    assert fields["severity"] == "medium"


def test_security_words_flow_through_an_upstream_step():
    investigation = OfflineBackend().run(
        request("investigator", "Is there a command injection in deploy.sh?"),
        lambda _: None, CancelToken()).output
    fields, _ = answer("triager", f"Classify: {investigation}")
    assert fields["severity"] == "critical"


def test_validator_upholds_only_a_synthesis_that_cites_evidence():
    cited = "## Answer\nIt holds.\n- E1: the log says so (source: app.log:3; trust: direct)"
    assert answer("validator", cited)[0]["verdict"] == "upheld"
    assert answer("validator", "## Answer\nTrust me.")[0]["verdict"] == "weakened"


def test_streams_a_few_word_chunks_that_add_up_to_the_output():
    deltas: list[str] = []
    result = OfflineBackend().run(request(), deltas.append, CancelToken())
    assert len(deltas) > 3
    assert all(deltas)
    assert "".join(deltas) == result.output


def test_without_a_delay_nothing_waits():
    started = time.monotonic()
    for i in range(200):
        OfflineBackend().run(request(prompt=f"q{i}"), lambda _: None, CancelToken())
    assert time.monotonic() - started < 2


def test_a_paced_answer_is_cancelled_promptly():
    backend = make_backend("offline", offline_delay_s=30)
    token = CancelToken()
    first = threading.Event()
    canceller = threading.Thread(target=lambda: first.wait(10) and token.cancel())
    canceller.start()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        backend.run(request(), lambda _: first.set(), token)
    canceller.join(5)
    assert time.monotonic() - started < 2  # each pause is 30 s / (chunks - 1)


def test_a_paced_answer_takes_about_its_delay():
    started = time.monotonic()
    OfflineBackend(delay_s=0.2).run(request(), lambda _: None, CancelToken())
    assert 0.15 < time.monotonic() - started < 2


def test_make_backend_builds_each_backend_and_refuses_unknown_names():
    built = [make_backend(name, model="m") for name in ("offline", "openai", "cli")]
    try:
        assert [b.name for b in built] == ["offline", "openai", "cli"]
    finally:
        for b in built:
            b.close()
    with pytest.raises(ValueError, match="offline, openai, cli"):
        make_backend("anthropic")
