"""Settings: read once, from the environment and then flags, and passed down.

No other module reads the environment (CONVENTIONS §8).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from actors.agents import BACKENDS, DEFAULT_COMMAND
from actors.config import EngineConfig
from flows.redact import Redactor, url_secrets


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

    def __repr__(self) -> str:
        """The settings as safe to print: no known secret shows (flows.redact)."""
        fields = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self))
        return Redactor(self.known_secrets())(f"Settings({fields})")

    def known_secrets(self) -> tuple[str, ...]:
        """What no event, report, frame or log line may show: the API key, the store's
        password and the secret in the base URL's userinfo (see flows.redact)."""
        found = [self.openai_api_key, *url_secrets(self.openai_base_url)]
        try:
            found.append(str(sa.engine.make_url(self.db).password or ""))
        except Exception:  # a URL SQLAlchemy cannot parse: the store refuses it later, by name
            pass
        return tuple(s for s in found if s)
    url: str = ""  # the baton server CLI commands go through ("" = a live server of the store, if any)
    personas: str = ""  # a folder of extra persona files (NAME.md), beside the shipped ones
    max_connections: int = 1000  # HTTP connections held at once (lowered to fit the open-files limit)
    header_timeout_s: float = 10.0  # a request head must arrive within this (from connecting or the last answer)
    body_timeout_s: float = 30.0  # a request body must arrive within this of its head

    def engine_config(self) -> EngineConfig:
        """The part of the settings the engine needs."""
        identity = {"node": self.node} if self.node else {}
        return EngineConfig(
            max_active_runs=self.max_active_runs,
            agent_slots=self.agent_slots,
            stall_s=self.stall_s,
            backend=self.agent,
            model=self.model,
            max_output_bytes=self.max_output_bytes,
            known_secrets=self.known_secrets(),
            **identity,
        )

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
    "BATON_URL": ("url", str),
    "BATON_PERSONAS": ("personas", str),
    "BATON_MAX_CONNECTIONS": ("max_connections", int),
    "BATON_HEADER_TIMEOUT_S": ("header_timeout_s", float),
    "BATON_BODY_TIMEOUT_S": ("body_timeout_s", float),
}


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
    for name in ("stall_s", "openai_read_timeout_s", "max_output_bytes", "header_timeout_s", "body_timeout_s"):
        if getattr(settings, name) <= 0:
            raise SettingsError(f"{_named(name)} must be positive")
    if settings.max_connections < 1:
        raise SettingsError(f"{_named('max_connections')} must be at least 1")
    if settings.url and not settings.url.startswith(("http://", "https://")):
        raise SettingsError(f"BATON_URL / --server {settings.url!r} is not an http:// or https:// URL")
    if not (0 < settings.port < 65536):
        raise SettingsError(f"{_named('port')} {settings.port} is not a port")
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


def safe_url(url: str) -> str:
    """The store URL as safe to print (password hidden)."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # a URL SQLAlchemy cannot parse has no password it could hide
        return "<unparsable database URL>"


def scrub(message: str, url: str) -> str:
    """``message`` on one line, with the URL's password removed wherever a driver echoed it."""
    try:
        password = sa.engine.make_url(url).password
    except Exception:
        password = None
    return " ".join(Redactor([str(password)] if password else [])(message).split())
