"""The shipped personas: one markdown file each, read by the agent backends.

The names are listed here as data so the pure core can refuse an unknown
persona without touching the file system (a unit test keeps the list and the
files in step).

A person may add personas of their own (a folder of ``NAME.md`` files,
``BATON_PERSONAS``). The outside layer reads that folder and hands the
names in through ``actors.agents.personas.add_personas`` before any flows
module is imported, because a Flow checks its personas when it is defined
(at import). The core never reads a file: it only keeps the set of names.
"""

from collections.abc import Iterable

PERSONAS: frozenset[str] = frozenset(
    {
        "investigator",
        "triager",
        "security-reviewer",
        "reviewer",
        "synthesizer",
        "planner",
        "writer",
        "researcher",
        "validator",
        "architect",
        "analyst",
        "implementation-specialist",
        "poc-specialist",
        "codebase-explorer",
    }
)

COORDINATOR_TEMPERATURE = 0.2

TEMPERATURES: dict[str, float] = {
    # The personas that coordinate (merge angles, plan, classify, attack an answer) are asked for
    # steady, repeatable text; the others keep the server's default.
    "synthesizer": COORDINATOR_TEMPERATURE,
    "planner": COORDINATOR_TEMPERATURE,
    "triager": COORDINATOR_TEMPERATURE,
    "validator": COORDINATOR_TEMPERATURE,
}
"""The sampling temperature a persona is sent with (DESIGN §11); a step's own ``temperature`` wins."""

_added: frozenset[str] = frozenset()


def add(names: Iterable[str]) -> None:
    """Make personas beyond the shipped ones known to flow validation (for this process).

    A shipped name is refused (ValueError): a persona that means one text in
    one process and another elsewhere would make a run's record ambiguous.
    """
    global _added
    names = frozenset(names)
    clash = sorted(names & PERSONAS)
    if clash:
        raise ValueError(f"persona {clash[0]!r} ships with baton and cannot be replaced; give yours another name")
    _added = _added | names


def known() -> frozenset[str]:
    """Every persona a flow may name here: the shipped ones and those added."""
    return PERSONAS | _added
