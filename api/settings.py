"""Settings: read once, from the environment and then flags, and passed down.

No other module reads the environment (CONVENTIONS §8).

Every ``baton`` command reads its settings first, so this module imports
neither SQLAlchemy nor the agent backends (with their HTTP client): the
store URL is read by ``db_url``, which parses it as SQLAlchemy's
``make_url`` does, and the engine's and the redactor's modules are imported
where a value of theirs is built (docs/PERFORMANCE.md, "CLI start-up").
"""

from __future__ import annotations

import dataclasses
import getpass
import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import unquote, urlsplit, urlunsplit

from actors.config import BACKENDS, DEFAULT_COMMAND, DEFAULT_TASK_COMMAND

if TYPE_CHECKING:
    from actors.config import EngineConfig


class DbUrl(NamedTuple):
    """The parts of a store URL baton reads without opening it (as SQLAlchemy's ``URL`` has them)."""

    backend: str  # "sqlite", "postgresql" (the dialect, without its "+driver")
    host: str | None
    port: int | None
    database: str | None
    password: str | None


# SQLAlchemy's own pattern (sqlalchemy.engine.url._parse_url, 2.x): tests/api/test_settings.py checks
# db_url against make_url on URLs of every shape, so both read a URL alike.
_DB_URL = re.compile(r"""
    (?P<name>[\w\+]+)://
    (?:
        (?P<username>[^:/]*)
        (?::(?P<password>[^@]*))?
    @)?
    (?:
        (?:
            \[(?P<ipv6host>[^/\?]+)\] |
            (?P<ipv4host>[^/:\?]+)
        )?
        (?::(?P<port>[^/\?]*))?
    )?
    (?:/(?P<database>[^\?]*))?
    (?:\?(?P<query>.*))?
    """, re.X)


def db_url(url: str) -> DbUrl:
    """The parts of the store URL ``url``, read as ``sqlalchemy.engine.make_url`` reads them, without
    importing SQLAlchemy (~0.2-0.3 s a command); ValueError where make_url would refuse it."""
    found = _DB_URL.match(url)
    if found is None:
        raise ValueError("Could not parse SQLAlchemy URL from given URL string")
    parts = found.groupdict()
    port = None if parts["port"] is None else int(parts["port"])  # "h:/db" is refused, as make_url refuses it
    return DbUrl(backend=parts["name"].partition("+")[0], host=parts["ipv4host"] or parts["ipv6host"], port=port,
                 database=None if parts["database"] is None else unquote(parts["database"]),
                 password=None if parts["password"] is None else unquote(parts["password"]))


def _sqlite_file(url: DbUrl | None) -> str:
    """The file of a SQLite store's URL ("" for another store, or one in memory)."""
    if url is None or url.backend != "sqlite" or url.database == ":memory:":
        return ""
    return url.database or ""


def slot_pool_of(agent: str, base_url: str, cli_command: str) -> str:
    """What ``agent_slots`` count per across a cluster: the model server's base URL (without any user
    or password in it) for openai; the command's program for cli; else the backend's name."""
    if agent == "openai":
        parts = urlsplit(base_url)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    if agent == "cli":
        return "cli:" + (cli_command.split() or [""])[0]
    return agent


class SettingsError(ValueError):
    """A setting has a value baton cannot use; the message names the variable."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything a baton process is configured with (DESIGN §9)."""

    db: str = "sqlite:///baton.db"
    flows: tuple[str, ...] = ()
    agent: str = "offline"
    openai_base_url: str = "http://localhost:11434/v1"
    openai_api_key: str = ""
    model: str = ""
    cli_command: str = DEFAULT_COMMAND
    cli_task_command: str = DEFAULT_TASK_COMMAND  # a task implementor on the cli backend (DESIGN §12)
    max_active_runs: int = 8
    agent_slots: int = 4
    stall_s: float = 60.0
    host: str = "127.0.0.1"
    port: int = 8765
    offline_delay_s: float = 0.0
    max_body_bytes: int = 64 * 1024
    node: str = ""  # this process's name among those sharing the store; "" = EngineConfig's host:pid
    openai_read_timeout_s: float = 120.0  # silence from the model server before a call fails
    max_output_bytes: int = 1024 * 1024  # a step output larger than this fails the step
    cluster: bool = True  # nodes on one PostgreSQL share one queue and the capacity (DESIGN §16)
    lease_ttl_s: float = 30.0  # a node that stops renewing its lease loses its runs (and slots) after this

    def __repr__(self) -> str:
        """The settings as safe to print: no known secret shows (flows.redact)."""
        from flows.redact import Redactor  # flows' package costs ~0.1 s; a repr is rare

        fields = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self))
        return Redactor(self.known_secrets())(f"Settings({fields})")

    def known_secrets(self) -> tuple[str, ...]:
        """What no event, report, frame or log line may show: the API key, the store's
        password and the secret in the base URL's userinfo (see flows.redact)."""
        from flows.redact import url_secrets

        found = [self.openai_api_key, self.token, *url_secrets(self.openai_base_url)]
        try:
            found.append(str(db_url(self.db).password or ""))
        except Exception:  # a URL SQLAlchemy cannot parse: the store refuses it later, by name
            pass
        return tuple(s for s in found if s)
    url: str = ""  # the baton server CLI commands go through ("" = a live server of the store, if any)
    reconnect_s: float = 60.0  # a command following a run waits this long for its server to come back
    personas: str = ""  # a folder of extra persona files (NAME.md), beside the shipped ones
    max_connections: int = 1000  # HTTP connections held at once (lowered to fit the open-files limit)
    header_timeout_s: float = 10.0  # a request head must arrive within this (from connecting or the last answer)
    body_timeout_s: float = 30.0  # a request body must arrive within this of its head
    one_cpu: bool = True  # `baton serve`'s threads on one CPU, the processes it starts on all (actors.cpus)
    # Identity and access (DESIGN §13; README "Security").
    insecure_no_auth: bool = False  # serve without tokens: loopback only, with a warning at every start
    token: str = ""  # the token CLI commands send to a server ("" = the admin token file's)
    token_file: str = ""  # where `baton serve` writes the first admin token ("" = admin_token_file's default)
    allowed_hosts: tuple[str, ...] = ()  # Host names served besides localhost, the bind address and IP literals
    cors_origins: tuple[str, ...] = ()  # origins (scheme://host[:port]) allowed cross-origin calls; none by default
    session_ttl_s: float = 8 * 3600.0  # a console session ends this long after its login
    # Task graphs (DESIGN §12).
    worktrees: str = ""  # where task runs' worktrees go ("" = `worktrees/` beside a SQLite store, else ~/.local/...)
    task_max_rounds: int = 3  # review rejections (and failing-check rounds) before a person is asked
    run_timeout_s: float = 300.0  # the `run` tool and each check of a task
    # Tamper evidence (DESIGN §13; README "Security").
    chain_key_file: str = ""  # a file holding the key of the keyed hash chain ("" = unkeyed chain)
    seal_interval_s: float = 3600.0  # `baton serve` seals the log this often, and at shutdown (0 = at shutdown only)

    def chain_key(self) -> bytes | None:
        """The keyed chain's key, read from ``chain_key_file`` (None when unset).

        Raises SettingsError when the file cannot be read, is empty, or can be
        read by anyone but its owner (a key others can read protects nothing).
        """
        if not self.chain_key_file:
            return None
        path = Path(self.chain_key_file).expanduser()
        try:
            mode = path.stat().st_mode
            key = path.read_bytes().strip()
        except OSError as exc:
            raise SettingsError(f"{_named('chain_key_file')}: cannot read {str(path)!r}: {exc.strerror}") from None
        if mode & 0o077:
            raise SettingsError(f"{_named('chain_key_file')}: {str(path)!r} can be read by others than its owner "
                                f"(mode {mode & 0o777:o}); chmod 600 it")
        if len(key) < 16:
            raise SettingsError(f"{_named('chain_key_file')}: {str(path)!r} holds {len(key)} bytes; a key needs at "
                                f"least 16 (e.g. head -c 32 /dev/urandom | base64 > FILE)")
        return key

    def store_options(self) -> dict[str, Any]:
        """The options ``open_store`` takes from the settings (the chain key, when one is set)."""
        key = self.chain_key()
        return {} if key is None else {"chain_key": key}

    def admin_token_file(self) -> Path:
        """Where the first ``baton serve`` writes its admin token, and where ``baton`` commands read it.

        ``token_file`` when set; for a SQLite store, beside its file
        (``baton.db`` -> ``baton.db.admin-token``), so a server and the
        commands of the same folder agree without configuration; for another
        store, ``~/.config/baton/admin-token-<host>-<port>-<database>``.
        """
        if self.token_file:
            return Path(self.token_file).expanduser()
        url = self._store_url()
        if sqlite_file := _sqlite_file(url):
            return Path(sqlite_file + ".admin-token")
        home = Path.home() / ".config"
        where = "memory" if url is None else f"{url.host or 'local'}-{url.port or 'default'}-{url.database or ''}"
        return home / "baton" / ("admin-token-" + re.sub(r"[^A-Za-z0-9._-]", "_", where))

    def engine_config(self) -> EngineConfig:
        """The part of the settings the engine needs."""
        from actors.config import EngineConfig

        identity: dict[str, Any] = {"node": self.node} if self.node else {}
        return EngineConfig(
            max_active_runs=self.max_active_runs,
            agent_slots=self.agent_slots,
            stall_s=self.stall_s,
            backend=self.agent,
            model=self.model,
            max_output_bytes=self.max_output_bytes,
            cluster=self.cluster and self.db.startswith("postgresql"),
            slot_pool=slot_pool_of(self.agent, self.openai_base_url, self.cli_command),
            lease_ttl_s=self.lease_ttl_s,
            known_secrets=self.known_secrets(),
            worktrees=str(self.worktrees_dir()),
            task_run_timeout_s=self.run_timeout_s,
            cli_task_command=self.cli_task_command,
            **identity,
        )

    def worktrees_dir(self) -> Path:
        """Where task runs' worktrees go: ``worktrees`` when set, else ``worktrees/`` beside a SQLite store's
        file, else ``~/.local/share/baton/worktrees`` (always outside a person's checkout)."""
        if self.worktrees:
            return Path(self.worktrees).expanduser().absolute()
        if sqlite_file := _sqlite_file(self._store_url()):
            return Path(sqlite_file).absolute().parent / "worktrees"
        return Path.home() / ".local" / "share" / "baton" / "worktrees"

    def _store_url(self) -> DbUrl | None:
        """The store URL's parts; None for a URL SQLAlchemy cannot parse (the store refuses it, by name,
        before what is derived from it here matters)."""
        try:
            return db_url(self.db)
        except Exception:
            return None

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` (flags override the environment); None means unchanged."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


_ENV: dict[str, tuple[str, type]] = {
    "BATON_DB": ("db", str),
    "BATON_FLOWS": ("flows", tuple),
    "BATON_AGENT": ("agent", str),
    "BATON_OPENAI_BASE_URL": ("openai_base_url", str),
    "BATON_OPENAI_API_KEY": ("openai_api_key", str),
    "BATON_MODEL": ("model", str),
    "BATON_CLI_COMMAND": ("cli_command", str),
    "BATON_CLI_TASK_COMMAND": ("cli_task_command", str),
    "BATON_MAX_ACTIVE_RUNS": ("max_active_runs", int),
    "BATON_AGENT_SLOTS": ("agent_slots", int),
    "BATON_STALL_S": ("stall_s", float),
    "BATON_HOST": ("host", str),
    "BATON_PORT": ("port", int),
    "BATON_OFFLINE_DELAY_S": ("offline_delay_s", float),
    "BATON_MAX_BODY_BYTES": ("max_body_bytes", int),
    "BATON_NODE": ("node", str),
    "BATON_OPENAI_READ_TIMEOUT_S": ("openai_read_timeout_s", float),
    "BATON_MAX_OUTPUT_BYTES": ("max_output_bytes", int),
    "BATON_CLUSTER": ("cluster", bool),
    "BATON_LEASE_TTL_S": ("lease_ttl_s", float),
    "BATON_URL": ("url", str),
    "BATON_RECONNECT_S": ("reconnect_s", float),
    "BATON_PERSONAS": ("personas", str),
    "BATON_MAX_CONNECTIONS": ("max_connections", int),
    "BATON_HEADER_TIMEOUT_S": ("header_timeout_s", float),
    "BATON_BODY_TIMEOUT_S": ("body_timeout_s", float),
    "BATON_ONE_CPU": ("one_cpu", bool),
    "BATON_INSECURE_NO_AUTH": ("insecure_no_auth", bool),
    "BATON_TOKEN": ("token", str),
    "BATON_TOKEN_FILE": ("token_file", str),
    "BATON_ALLOWED_HOSTS": ("allowed_hosts", tuple),
    "BATON_CORS_ORIGINS": ("cors_origins", tuple),
    "BATON_SESSION_TTL_S": ("session_ttl_s", float),
    "BATON_WORKTREES": ("worktrees", str),
    "BATON_TASK_MAX_ROUNDS": ("task_max_rounds", int),
    "BATON_RUN_TIMEOUT_S": ("run_timeout_s", float),
    "BATON_CHAIN_KEY_FILE": ("chain_key_file", str),
    "BATON_SEAL_INTERVAL_S": ("seal_interval_s", float),
}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def from_env(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``BATON_*`` variables; SettingsError names a bad one."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for var, (name, kind) in _ENV.items():
        raw = environ.get(var)
        if raw is None or raw == "":
            continue
        if kind is tuple:
            values[name] = tuple(p.strip() for p in raw.split(",") if p.strip())
            continue
        if kind is bool:
            if raw.strip().lower() not in _TRUE + _FALSE:
                raise SettingsError(f"{var}={raw!r} is not a yes or no: use 1 or 0 (true/false, yes/no, on/off)")
            values[name] = raw.strip().lower() in _TRUE
            continue
        try:
            values[name] = kind(raw)
        except ValueError:
            raise SettingsError(f"{var}={raw!r} is not a valid {kind.__name__}") from None
    return check(Settings(**values))


def _named(name: str) -> str:
    """How a person sets ``name``: its variable and its flag ("BATON_STALL_S / --stall-s")."""
    return f"BATON_{name.upper()} / --{name.replace('_', '-')}"


def check(settings: Settings) -> Settings:
    """Refuse values that cannot work, naming the setting (its variable and its flag)."""
    if settings.agent not in BACKENDS:
        raise SettingsError(f"{_named('agent')} {settings.agent!r}: known backends are {', '.join(BACKENDS)}")
    for name in ("max_active_runs", "agent_slots"):
        if getattr(settings, name) < 0:
            raise SettingsError(f"{_named(name)} cannot be negative (0 means no limit)")
    for name in ("stall_s", "openai_read_timeout_s", "max_output_bytes", "header_timeout_s", "body_timeout_s",
                 "session_ttl_s", "run_timeout_s", "lease_ttl_s"):
        if getattr(settings, name) <= 0:
            raise SettingsError(f"{_named(name)} must be positive")
    if not 1 <= settings.task_max_rounds <= 20:
        raise SettingsError(f"{_named('task_max_rounds')} must be between 1 and 20")
    if settings.reconnect_s < 0:
        raise SettingsError("BATON_RECONNECT_S cannot be negative (0 means: do not wait for a server that went away)")
    if settings.seal_interval_s < 0:
        raise SettingsError(f"{_named('seal_interval_s')} cannot be negative (0 means: seal at shutdown only)")
    if settings.max_connections < 1:
        raise SettingsError(f"{_named('max_connections')} must be at least 1")
    if settings.url and not settings.url.startswith(("http://", "https://")):
        raise SettingsError(f"BATON_URL / --server {settings.url!r} is not an http:// or https:// URL")
    if not (0 < settings.port < 65536):
        raise SettingsError(f"{_named('port')} {settings.port} is not a port")
    for origin in settings.cors_origins:
        if not re.fullmatch(r"https?://[^/\s]+", origin):
            raise SettingsError(f"{_named('cors_origins')} {origin!r} is not an origin: scheme://host[:port], "
                                f"no path (e.g. https://console.example.com)")
    return settings


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a bind address or a name) reaches this machine only."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_safe_auth(settings: Settings) -> Settings:
    """Refuse ``--insecure-no-auth`` on a host others can reach: anyone on the network could act unseen."""
    if settings.insecure_no_auth and not is_loopback(settings.host):
        raise SettingsError(f"--insecure-no-auth / BATON_INSECURE_NO_AUTH serves without tokens, so it listens on "
                            f"a loopback host only (127.0.0.1, ::1, localhost), not {settings.host!r}: anyone who "
                            f"reaches that address could launch, approve and cancel runs")
    return settings


def require_model(settings: Settings) -> Settings:
    """Refuse the openai backend without a default model, for a process that drives runs of its own.

    Without one every agent step of a run launched without ``--model``
    failed at its first call; a server refuses to start instead, naming the
    setting. A run launched with its own model needs no default.
    """
    if settings.agent == "openai" and not settings.model:
        raise SettingsError(f"BATON_AGENT=openai needs a model: set {_named('model')} (e.g. qwen2.5-coder:7b), "
                            f"the model name the server at {settings.openai_base_url} knows")
    return settings


def os_user() -> str:
    """The login name of the person running this process ("cli" where there is none, as in some containers).

    What a command carried out in this process records as who acted: the
    database is trusted, so whoever runs baton on it is taken at their word.
    """
    try:
        return getpass.getuser()
    except Exception:
        return "cli"


def safe_url(url: str) -> str:
    """The store URL as safe to print (password hidden)."""
    import sqlalchemy as sa  # rendering as SQLAlchemy does: printed on errors and a few lines, not at start

    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # a URL SQLAlchemy cannot parse has no password it could hide
        return "<unparsable database URL>"


def scrub(message: str, url: str) -> str:
    """``message`` on one line, with the URL's password removed wherever a driver echoed it."""
    from flows.redact import Redactor

    try:
        password = db_url(url).password
    except Exception:
        password = None
    return " ".join(Redactor([str(password)] if password else [])(message).split())
