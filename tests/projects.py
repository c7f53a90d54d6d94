"""Projects for tests that launch with a ``project_id``: a launch names a registered git repository (DESIGN §11)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from actors.workspace.projects import ProjectBook
from eventstore import EventStore, open_store

_GIT = ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false",
        "-c", "init.defaultBranch=main"]


def tiny_repository(path: Path) -> Path:
    """A git work tree at ``path`` with one commit (a README)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run([*_GIT, "init", "-q"], cwd=path, check=True)
    (path / "README.md").write_text("# A test project\n")
    subprocess.run([*_GIT, "add", "-A"], cwd=path, check=True)
    subprocess.run([*_GIT, "commit", "-q", "-m", "first"], cwd=path, check=True)
    return path


def register(store: EventStore | str, under: Path, *project_ids: str) -> None:
    """Register each of ``project_ids`` as a tiny repository under ``under`` (idempotent), in ``store`` (or a URL)."""
    opened = open_store(store) if isinstance(store, str) else None
    book = ProjectBook(opened or store, time.time)  # type: ignore[arg-type]
    try:
        for project_id in project_ids:
            root = under / f"project-{project_id}"
            if not (root / ".git").exists():
                tiny_repository(root)
            book.add(project_id, root, by="tests")
    finally:
        if opened is not None:
            opened.close()
