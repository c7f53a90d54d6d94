"""Identity and access (DESIGN §13): roles, tokens as events, who may call what, four eyes.

Pure: shapes, the fold, the decisions and the rules; no randomness, no disk,
no clock. The shells are ``api.tokens`` (makes tokens, appends the events,
writes the admin token file) and ``api.http.auth`` (the middleware that
asks these rules on every request).

Why tokens are events: issuing a token grants power over runs, so who issued
which token, with which role, and who revoked it must be as auditable as a
run. They live in their own stream (:data:`AUTH_STREAM`); the registry of
valid tokens is its fold. Only a token's SHA-256 is recorded: a token is 256
random bits, so its hash cannot be reversed or guessed, and a slow or salted
hash (made for passwords, which are guessable) would add nothing but cost on
every request. Like ``flows.projects``, these are not run events: the run
projector, the frames and the run codec never see them (``run_id_of`` is
None for this stream).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping

import msgspec

from flows.errors import BatonError
from flows.events import Event

AUTH_STREAM = "auth"
"""The one stream holding every token's events."""

TOKEN_PREFIX = "baton_"
"""What every token starts with: a reader (or a secret scanner) knows one when it sees one."""

TOKEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
"""Letters, digits, ``.``, ``_``, ``@``, ``-``; 1-64 long: it is recorded as who acted, and shown in lists."""


class Role(str, enum.Enum):
    """What a principal may do; each role may do what the ones before it may (they nest)."""

    VIEWER = "viewer"  # read runs, reports, the audit log, the plan; follow the stream
    OPERATOR = "operator"  # + launch and cancel runs (message and abort, once they exist)
    APPROVER = "approver"  # + approve and reject paused steps
    ADMIN = "admin"  # + tokens (and projects, once they have routes)

    @property
    def rank(self) -> int:
        """Its place in the order viewer < operator < approver < admin."""
        return _ORDER.index(self)

    def allows(self, needed: Role) -> bool:
        """Whether this role may do what ``needed`` may."""
        return self.rank >= needed.rank


_ORDER = (Role.VIEWER, Role.OPERATOR, Role.APPROVER, Role.ADMIN)
ROLES = tuple(role.value for role in _ORDER)


ROUTE_ROLES: Mapping[str, Role | None] = {
    # Public: the console's page and files (they hold no data: it comes from /api), liveness for
    # probes, and the login exchange itself (its answer is the only way in).
    "console": None,
    "static": None,
    "health": None,
    "login": None,
    "logout": None,  # ends the session its cookie names, if any; needs nothing else
    # Reads and streams.
    "session": Role.VIEWER,
    "list_runs": Role.VIEWER,
    "get_run": Role.VIEWER,
    "run_events": Role.VIEWER,
    "run_report": Role.VIEWER,
    "flows": Role.VIEWER,
    "plan": Role.VIEWER,
    "nodes": Role.VIEWER,
    "stream": Role.VIEWER,
    "ws": Role.VIEWER,
    "openapi": Role.VIEWER,
    # Commands on runs.
    "launch": Role.OPERATOR,
    "cancel": Role.OPERATOR,
    "approve": Role.APPROVER,
    "reject": Role.APPROVER,
    # Task runs (DESIGN §12): reading their tasks; launching one and a word on one task.
    "run_tasks": Role.VIEWER,
    "launch_task_run": Role.OPERATOR,
    "task_message": Role.OPERATOR,
    "task_abort": Role.OPERATOR,
    "task_skip": Role.OPERATOR,
    "land_task_run": Role.APPROVER,  # landing is the run's closing approval (fast-forward only)
    "fork": Role.OPERATOR,  # a new run from a run's log (DESIGN §15): as much as a launch
    "retry": Role.OPERATOR,
    # Who may do anything at all.
    "list_tokens": Role.ADMIN,
    "create_token": Role.ADMIN,
    "revoke_token": Role.ADMIN,
    # Projects (DESIGN §11): registering grants models read access to a path of the server's disk.
    "list_projects": Role.VIEWER,
    "add_project": Role.ADMIN,
    "remove_project": Role.ADMIN,
}
"""Which role each HTTP route (by its name) needs; None: none. A route missing here is refused to all
(the app checks at start that every route it serves has an entry)."""


# -- errors --------------------------------------------------------------------------------------


class AccessError(BatonError):
    """Root of the access decisions' errors; the message says what to do."""


class Unauthenticated(AccessError):
    """No valid credential came with the request (401)."""


class Forbidden(AccessError):
    """The principal's role does not reach the role ``needed`` (403)."""

    def __init__(self, principal: Principal, needed: Role, what: str) -> None:
        """Name who asked, what they have and what was needed."""
        self.principal = principal
        self.needed = needed
        super().__init__(f"{what} needs the {needed.value} role; {principal.name!r} has {principal.role.value}")


class IdentityMismatch(AccessError):
    """A request claimed to act for someone other than its principal (a ``by`` field, a header)."""

    def __init__(self, field: str, claimed: str, principal: str) -> None:
        """Name the field, the claim and who the request really comes from."""
        self.field = field
        self.claimed = claimed
        self.principal = principal
        super().__init__(f"{field} is {claimed!r}, but this request comes from {principal!r}: the log records who "
                         f"acts from the credential; leave {field} out (or give {principal!r})")


class FourEyesRefused(AccessError):
    """The person who launched a run tried to approve or reject a four-eyes step of it."""

    def __init__(self, run_id: str, step_id: str, by: str) -> None:
        """Name the run, the step and who tried."""
        self.run_id = run_id
        self.step_id = step_id
        self.by = by
        rule = (f"step {step_id!r} of run {run_id} needs four eyes: someone other than the person who launched "
                f"the run must decide")
        super().__init__(f"{rule}, and {by!r} launched it" if by else f"{rule}, and this decision names nobody")


class TokenError(AccessError, ValueError):
    """Root of the token decisions' errors (422 through the API)."""


class InvalidTokenName(TokenError):
    """A token name that cannot be recorded as who acted."""

    def __init__(self, name: str) -> None:
        """Name the name and the rule."""
        self.name = name
        super().__init__(f"invalid token name {name!r}: use 1-64 letters, digits, '.', '_', '@' or '-', "
                         "starting with a letter or digit")


class UnknownRole(TokenError):
    """A role that is not one of :data:`ROLES`."""

    def __init__(self, role: str) -> None:
        """Name the role and the ones that exist."""
        self.role = role
        super().__init__(f"unknown role {role!r}: roles are {', '.join(ROLES)}")


class TokenExists(TokenError):
    """A valid token already goes by that name."""

    def __init__(self, name: str) -> None:
        """Name the name."""
        self.name = name
        super().__init__(f"a token named {name!r} already exists; revoke it first or pick another name")


class UnknownToken(TokenError, KeyError):
    """No valid token goes by that name."""

    def __init__(self, name: str, known: Iterable[str] = ()) -> None:
        """Name the name and the ones that exist."""
        self.name = name
        names = ", ".join(sorted(known)) or "none"
        super().__init__(f"no token named {name!r} (tokens: {names})")

    def __str__(self) -> str:
        # KeyError would print the repr of its argument: show the sentence.
        return str(self.args[0])


# -- events and the fold -------------------------------------------------------------------------


class TokenIssued(Event, frozen=True):
    """A token was made for ``name`` with ``role``; only its SHA-256 is kept."""

    name: str
    role: str
    token_hash: str
    by: str = ""


class TokenRevoked(Event, frozen=True):
    """The token of ``name`` no longer opens anything (sessions made with it end too)."""

    name: str
    by: str = ""
    reason: str = ""


AUTH_EVENT_TYPES: dict[str, type[Event]] = {cls.__name__: cls for cls in (TokenIssued, TokenRevoked)}


class Token(msgspec.Struct, frozen=True, kw_only=True):
    """A valid token as the registry knows it (its hash, never the token)."""

    name: str
    role: Role
    token_hash: str
    issued_by: str = ""
    issued_at: float = 0.0


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """Who a request (or a command) acts as: recorded as ``launched_by`` / ``by``.

    ``via`` says how it was established: ``token`` (a bearer token),
    ``session`` (the console's cookie), or ``none`` (a server started with
    ``--insecure-no-auth``: everyone is the same anonymous admin).
    """

    name: str
    role: Role
    via: str = "token"
    token_hash: str = ""


ANONYMOUS = Principal(name="anonymous", role=Role.ADMIN, via="none")
"""Everyone, on a server started with ``--insecure-no-auth`` (loopback only)."""


class TokenRegistry(msgspec.Struct, frozen=True):
    """Every valid token by name, and the stream version it was folded from."""

    tokens: dict[str, Token] = {}
    version: int = 0

    def by_hash(self) -> dict[str, Token]:
        """The valid tokens by their hash (the shell keeps this index; it is rebuilt on each change)."""
        return {token.token_hash: token for token in self.tokens.values()}

    def get(self, name: str) -> Token:
        """The valid token ``name``; raises :class:`UnknownToken` naming the known ones."""
        try:
            return self.tokens[name]
        except KeyError:
            raise UnknownToken(name, self.tokens) from None


def evolve(registry: TokenRegistry, event: Event) -> TokenRegistry:
    """The registry after one event of the auth stream (unknown events count, change nothing).

    A TokenIssued whose role this version does not know grants nothing: it is
    left out rather than guessed.
    """
    tokens = registry.tokens
    if isinstance(event, TokenIssued) and event.role in ROLES:
        token = Token(name=event.name, role=Role(event.role), token_hash=event.token_hash,
                      issued_by=event.by, issued_at=event.at)
        tokens = {**tokens, event.name: token}
    elif isinstance(event, TokenRevoked):
        tokens = {k: v for k, v in tokens.items() if k != event.name}
    return TokenRegistry(tokens=tokens, version=registry.version + 1)


def fold(events: Iterable[Event], registry: TokenRegistry | None = None) -> TokenRegistry:
    """The registry from the auth stream's events, in order (on from ``registry`` when given)."""
    registry = registry or TokenRegistry()
    for event in events:
        registry = evolve(registry, event)
    return registry


# -- decisions -----------------------------------------------------------------------------------


def token_hash(token: str) -> str:
    """The SHA-256 (hex) a token is recorded and looked up by."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def issue(registry: TokenRegistry, name: str, role: str, digest: str, *, by: str = "",
          now: float = 0.0) -> list[Event]:
    """The event that issues a token of ``role`` for ``name``, recorded by its hash ``digest``.

    Raises InvalidTokenName, UnknownRole, or TokenExists when a valid token
    has that name already (names are who acted: two live tokens of one name
    would make the log ambiguous).
    """
    if not TOKEN_NAME.fullmatch(name):
        raise InvalidTokenName(name)
    if role not in ROLES:
        raise UnknownRole(role)
    if name in registry.tokens:
        raise TokenExists(name)
    return [TokenIssued(name=name, role=role, token_hash=digest, by=by, at=now)]


def revoke(registry: TokenRegistry, name: str, *, by: str = "", reason: str = "", now: float = 0.0) -> list[Event]:
    """The event that revokes the token ``name``; raises UnknownToken."""
    registry.get(name)
    return [TokenRevoked(name=name, by=by, reason=reason, at=now)]


def authenticate(index: Mapping[str, Token], presented: str) -> Principal | None:
    """The principal a presented token stands for, or None.

    The index is looked up by the token's hash, which a caller cannot steer
    bit by bit (so the lookup's timing says nothing about stored hashes),
    and the hash found is compared again in constant time.
    """
    if not presented.startswith(TOKEN_PREFIX):
        return None
    digest = token_hash(presented)
    found = index.get(digest)
    if found is None or not hmac.compare_digest(found.token_hash, digest):
        return None
    return Principal(name=found.name, role=found.role, via="token", token_hash=found.token_hash)


def check_access(principal: Principal | None, needed: Role | None, what: str) -> None:
    """Raise Unauthenticated (no principal) or Forbidden (a role too low) for ``what``; None passes."""
    if needed is None:
        return
    if principal is None:
        raise Unauthenticated(f"{what} needs a token: send 'Authorization: Bearer <token>' (baton tokens create "
                              f"NAME --role {needed.value} makes one), or log in to the console")
    if not principal.role.allows(needed):
        raise Forbidden(principal, needed, what)


def check_identity(field: str, claimed: str, principal: Principal) -> None:
    """Raise IdentityMismatch when a request names someone (``claimed``) other than its principal."""
    if claimed and claimed != principal.name:
        raise IdentityMismatch(field, claimed, principal.name)


def check_four_eyes(run_id: str, step_id: str, launched_by: str, by: str) -> None:
    """A four-eyes decision: refused to the run's launcher, and to nobody-in-particular (``by`` empty).

    A run whose launcher was not recorded (older logs) has no launcher to
    exclude; any named decider passes.
    """
    if not by or (launched_by and by == launched_by):
        raise FourEyesRefused(run_id, step_id, by)
