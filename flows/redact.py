"""Secrets out of text before it reaches an event, a report, a frame or a log line.

The log is append-only: a password that reaches a StepFailed stays there for
good, and is copied into the report, the frames and every export. So text that
comes from outside baton's own wording (a backend's error, an exception's
message, a traceback) goes through one :class:`Redactor` first. These are the
rules, in one home:

- URL userinfo: ``scheme://user:password@host`` loses its password
  (``scheme://user:***@host``, as SQLAlchemy prints a URL) and
  ``scheme://token@host`` its whole userinfo (``scheme://***@host``): a lone
  user name is how tokens are often given;
- query parameters whose name says key, token, secret, password or signature:
  the value becomes ``***``;
- ``Bearer <token>`` and ``Basic <credentials>`` (an echoed Authorization
  header): the credentials become ``***``;
- the known secrets (the configured API key, the store password, the userinfo
  of the configured base URL), wherever they occur, raw or percent-encoded.
  Known secrets shorter than :data:`MIN_SECRET` characters are left to the
  structural rules: replacing every "ab" in a message would garble it and hide
  nothing worth hiding.

Pure (no I/O): the known secrets come from the settings, passed down.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from urllib.parse import quote, unquote, urlsplit

MASK = "***"
MIN_SECRET = 4

_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)([^/\s@:?#'\"<>]+)(:[^/\s@?#'\"<>]*)?@")
_QUERY_SECRET = re.compile(
    r"(?i)([?&;](?:[a-z0-9_.\-]*(?:key|token|secret|passw(?:or)?d|pwd|signature|sig|credential|auth))=)"
    r"[^&;#\s'\"<>]+"
)
# Credentials hold a digit or a symbol: "a basic setting" is prose, not a header.
_AUTH_SCHEME = re.compile(r"\b(Bearer|Basic|bearer|basic)(\s+)(?=\S*[\d=+/_.\-])[A-Za-z0-9._~+/\-]{6,}=*")


def url_secrets(url: str) -> tuple[str, ...]:
    """The secret inside ``url``'s userinfo (decoded): its password, or a lone user name (a token).

    A user name beside a password is not a secret: treating "user" as one would
    mask the word wherever it occurs (the URL form is masked by the userinfo rule).
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return ()
    if parts.password:
        return (unquote(parts.password),)
    return (unquote(parts.username),) if parts.username else ()


def without_userinfo(url: str) -> str:
    """``url`` as safe to print: its userinfo (if any) replaced by ``***``."""
    return _USERINFO.sub(_masked_userinfo, url)


def _masked_userinfo(m: re.Match[str]) -> str:
    # user:password@ keeps the user (as SQLAlchemy prints a URL); a lone user@ may be a token: all goes.
    return f"{m.group(1)}{m.group(2)}:{MASK}@" if m.group(3) is not None else f"{m.group(1)}{MASK}@"


class Redactor:
    """Removes secrets from text (see the module's rules); immutable, thread-safe."""

    def __init__(self, known: Iterable[str] = ()) -> None:
        """``known``: literal secrets to remove wherever they occur (short ones are ignored)."""
        forms: set[str] = set()
        for secret in known:
            if secret and len(secret) >= MIN_SECRET:
                forms.update({secret, quote(secret, safe=""), quote(secret)})
        # Longest first, so a secret that contains another is removed whole.
        ordered = sorted(forms, key=len, reverse=True)
        self.known: tuple[str, ...] = tuple(ordered)
        self._known = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __call__(self, text: str) -> str:
        """``text`` with every secret the rules find replaced by ``***``."""
        if not text:
            return text
        if self._known is not None:
            text = self._known.sub(MASK, text)
        text = _USERINFO.sub(_masked_userinfo, text)
        text = _QUERY_SECRET.sub(lambda m: f"{m.group(1)}{MASK}", text)
        return _AUTH_SCHEME.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)

    def all(self, texts: Iterable[str]) -> tuple[str, ...]:
        """Each of ``texts``, redacted."""
        return tuple(self(t) for t in texts)


@functools.lru_cache(maxsize=16)
def redactor(known: tuple[str, ...] = ()) -> Redactor:
    """The (cached) Redactor for a set of known secrets."""
    return Redactor(known)


__all__ = ["MASK", "MIN_SECRET", "Redactor", "redactor", "url_secrets", "without_userinfo"]
