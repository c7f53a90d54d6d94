"""Sortable ids for runs and commands: ULIDs (48 bits of Unix milliseconds, 80 random bits, Crockford base32).

The text python-ulid's ``str(ULID())`` gives, made with fewer Python steps:
the 130-bit field (two zero bits, then the 128) read ten bits at a time, each
ten looked up as two digits. python-ulid, and ``base64.b32encode`` (Python
in 3.11), took ~500 and ~250 opcodes an id; this takes ~100. The random
bits come from ``os.urandom``: a run id is in every URL of a run.
"""

from __future__ import annotations

import os
import time

_DIGITS = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford's base32
_PAIRS = [high + low for high in _DIGITS for low in _DIGITS]  # two digits for each ten bits
_SHIFTS = tuple(range(120, -1, -10))  # the 13 groups of ten bits of the 130-bit field, first to last


def new_ulid() -> str:
    """A fresh ULID, as 26 characters."""
    return ulid_text((time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big"))


def ulid_text(value: int) -> str:
    """The 26 characters of the ULID whose 128 bits are ``value``."""
    pairs = _PAIRS
    return "".join([pairs[value >> shift & 1023] for shift in _SHIFTS])
