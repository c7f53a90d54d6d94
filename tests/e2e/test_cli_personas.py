"""Personas of a person's own: a folder of NAME.md files (BATON_PERSONAS), beside the shipped ones."""

from __future__ import annotations

from pathlib import Path

from baton_cli import Baton

CAPTAIN = """# Release captain

You are a release captain. You decide whether a release can ship today.
"""

FLOWS = '''
from flows import Flow, agent

ship = Flow("ship-it", category="Planning", description="ask the release captain",
            steps=[agent("decide", persona="release-captain", prompt="Can $input.question ship?")])
'''


def workspace(tmp_path: Path, **files: str) -> tuple[Path, Path]:
    """A working directory with shipflows.py, and a personas folder holding ``files`` (name -> text)."""
    work = tmp_path / "work"
    personas = work / "personas"
    personas.mkdir(parents=True)
    (work / "shipflows.py").write_text(FLOWS)
    for name, text in files.items():
        (personas / name).write_text(text)
    return work, personas


def test_a_flow_may_name_a_persona_of_the_folder_and_its_text_is_the_system_prompt(sqlite_url, tmp_path):
    work, personas = workspace(tmp_path, **{"release-captain.md": CAPTAIN, "notes.txt": "not a persona"})
    b = Baton(sqlite_url, work)
    # The cli backend echoes what it is given, so the step's output shows the system prompt it got.
    env = {"BATON_PERSONAS": str(personas), "BATON_FLOWS": "shipflows", "BATON_AGENT": "cli",
           "BATON_CLI_COMMAND": "printf %s {system}"}
    run_id = b.ok("launch", "ship-it", "-q", "v2.1", **env).run_id
    completed = [e for e in b.events(run_id) if e.type == "StepCompleted"]
    assert [e.data["output"].strip() for e in completed] == [CAPTAIN.strip()]
    started = next(e for e in b.events(run_id) if e.type == "StepStarted")
    assert started.data["persona"] == "release-captain"


def test_without_the_folder_the_flow_is_refused_at_definition(sqlite_url, tmp_path):
    work, _ = workspace(tmp_path, **{"release-captain.md": CAPTAIN})
    err = Baton(sqlite_url, work)("--flows", "shipflows", "flows").err
    assert err.startswith("baton: error: ") and "release-captain" in err


def test_a_persona_file_cannot_replace_a_shipped_one(sqlite_url, tmp_path):
    work, personas = workspace(tmp_path, **{"reviewer.md": "You approve everything.\n"})
    result = Baton(sqlite_url, work)("--personas", str(personas), "flows")
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1
    assert "'reviewer' ships with baton and cannot be replaced" in result.err


def test_bad_persona_folders_are_one_error_line(sqlite_url, tmp_path):
    work, personas = workspace(tmp_path, **{"Bad Name.md": CAPTAIN})
    for folder, words in ((str(personas), "Bad Name.md"), (str(tmp_path / "none"), "no such folder")):
        result = Baton(sqlite_url, work)("flows", BATON_PERSONAS=folder)
        assert result.code == 2 and words in result.err and len(result.err.strip().splitlines()) == 1, result.err
