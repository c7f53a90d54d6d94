"""``baton seal`` and the seal ``baton replay --verify --seal`` checks against (DESIGN §13).

A seal is one line (``baton-seal:HEAD:EVENTS:DIGEST``) to keep outside the
database: the log up to HEAD must digest to DIGEST for ever after, so events
cut from the end or rewritten before it are caught (``eventstore.seal``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from api.cli.context import open_store_for, program, refuse_missing_store
from api.cli.errors import CliError
from api.failures import EXIT_OK, EXIT_USAGE
from api.settings import Settings
from eventstore import Seal
from flows.review import count


def cmd_seal(args: argparse.Namespace, settings: Settings) -> int:
    """Seal the log up to its head; print the seal (stdout) to keep elsewhere.

    Carried out in this process even when a server runs: a seal is one
    append, which the store takes from any process.
    """
    refuse_missing_store(settings)
    store = open_store_for(settings)
    try:
        seal = store.seal()
    finally:
        store.close()
    print(seal, flush=True)
    print(f"baton: sealed {count(seal.events, 'event')} up to position {seal.head}; keep the line above outside "
          f"the database, and check the log against it with: {program()} replay --verify --seal LINE",
          file=sys.stderr)
    return EXIT_OK


def seal_argument(text: str | None) -> Seal | None:
    """The seal ``--seal`` gives: the line itself, or a file holding it (``@PATH`` or a path)."""
    if text is None:
        return None
    raw = text
    path = Path(text.removeprefix("@")).expanduser()
    if text.startswith("@") or (not text.startswith("baton-seal:") and path.is_file()):
        try:
            raw = path.read_text(encoding="utf-8").strip().splitlines()[-1]
        except (OSError, IndexError) as exc:
            raise CliError(EXIT_USAGE, f"--seal: cannot read a seal from {str(path)!r}: {exc}") from None
    try:
        return Seal.parse(raw)
    except ValueError as exc:
        raise CliError(EXIT_USAGE, f"--seal: {exc}") from None
