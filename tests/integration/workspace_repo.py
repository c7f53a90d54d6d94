"""A real temporary git repository with every trap the confinement rules name.

Layout (under ``tmp_path``)::

    outside/secret.txt           SECRET, outside the root
    repo/                        the workspace root (git init, 2 commits)
      README.md                  "# Demo" ...
      src/app.py                 30 numbered lines, a `def handle_request`
      src/util.py
      docs -> src                a symlink that stays inside (followed)
      escape -> ../outside       a symlink directory leading out
      secret_link.txt -> ../outside/secret.txt
      image.png                  binary (NUL bytes)
      latin1.txt                 invalid UTF-8 in its first KiB
      big.txt                    over the 64 KiB cap the tests use
      build/out.txt              ignored by .gitignore
      notes.txt                  untracked, not ignored
      .git/config                the repository's own (must never be read)
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

SECRET = "SECRET-7f3a9c-outside-the-root"
GIT_ID = ["-c", "user.name=Test Person", "-c", "user.email=test@example.com",
          "-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main"]


def git(root: Path, *args: str) -> str:
    """Run git in ``root`` (test setup only); return stdout."""
    return subprocess.run(["git", *GIT_ID, *args], cwd=root, check=True, capture_output=True,
                          text=True).stdout


APP = "\n".join(
    ["import os", "", ""]
    + [f"# line {n}" for n in range(4, 10)]
    + ["def handle_request(req):", "    retries = 3", "    return req.body", ""]
    + [f"VALUE_{n} = {n}" for n in range(14, 31)]
) + "\n"


@dataclass(frozen=True)
class DemoRepo:
    """Paths of the demo repository and its surroundings."""

    root: Path
    outside: Path
    first_commit: str
    head: str


def make_repo(tmp_path: Path) -> DemoRepo:
    """Build the repository described in the module docstring."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET + "\n")
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    (root / "README.md").write_text("# Demo\n\nA demo repository.\n")
    (root / "src").mkdir()
    (root / "src" / "app.py").write_text(APP)
    (root / "src" / "util.py").write_text("def helper():\n    return 'help'\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "first commit")
    first = git(root, "rev-parse", "HEAD").strip()
    os.symlink("src", root / "docs")
    os.symlink("../outside", root / "escape")
    os.symlink("../outside/secret.txt", root / "secret_link.txt")
    (root / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    (root / "latin1.txt").write_bytes("caf\xe9 cr\xe8me\n".encode("latin-1"))
    (root / "big.txt").write_text("x" * 99 + "\n" * 1 + ("y" * 99 + "\n") * 700)
    (root / ".gitignore").write_text("build/\n")
    (root / "build").mkdir()
    (root / "build" / "out.txt").write_text("generated handle_request\n")
    (root / "src" / "util.py").write_text("def helper():\n    return 'help'\n\n\ndef other():\n    return 2\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "second commit: traps")
    (root / "notes.txt").write_text("untracked notes mention handle_request\n")
    return DemoRepo(root=root, outside=outside, first_commit=first, head=git(root, "rev-parse", "HEAD").strip())
