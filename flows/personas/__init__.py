"""The shipped personas: one markdown file each, read by the agent backends.

The names are listed here as data so the pure core can refuse an unknown
persona without touching the file system (a unit test keeps the list and the
files in step).
"""

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
    }
)
