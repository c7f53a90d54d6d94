"""Settings: the environment, then the flags of ``baton serve``; and the store URL as safe to print."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from api.cli import main as cli
from api.cli.parser import SERVE_FLAGS
from api.settings import Settings, SettingsError, from_env, safe_url, scrub


def test_safe_url_hides_the_password_and_scrub_removes_it_from_messages():
    url = "postgresql+psycopg://baton:s3cret@db:5432/baton"
    assert safe_url(url) == "postgresql+psycopg://baton:***@db:5432/baton"
    assert safe_url("sqlite:///baton.db") == "sqlite:///baton.db"
    assert safe_url("not a url") == "<unparsable database URL>"
    message = "connection to db failed:\n  password s3cret was refused"
    assert scrub(message, url) == "connection to db failed: password *** was refused"
    assert scrub("no URL here", "not a url") == "no URL here"


def test_node_comes_from_baton_node_and_reaches_the_engine_only_when_set():
    assert from_env({"BATON_NODE": "api-1"}).node == "api-1"
    assert Settings(node="api-1").engine_config().node == "api-1"
    default = Settings().engine_config().node  # EngineConfig's own: host:pid
    assert default and default.endswith(f":{os.getpid()}")


SERVE_ENV = {
    "BATON_MODEL": "env-model", "BATON_OPENAI_BASE_URL": "http://env:1/v1", "BATON_OPENAI_API_KEY": "env-key",
    "BATON_CLI_COMMAND": "env-cli {prompt}", "BATON_MAX_ACTIVE_RUNS": "3", "BATON_AGENT_SLOTS": "2",
    "BATON_STALL_S": "30", "BATON_NODE": "env-node", "BATON_HOST": "0.0.0.0", "BATON_PORT": "9000",
    "BATON_DB": "sqlite:///env.db", "BATON_AGENT": "offline",
}


@pytest.fixture
def environ(monkeypatch) -> Callable[[dict[str, str]], None]:
    """Replace every BATON_* variable of the environment with the given ones."""
    for var in [v for v in os.environ if v.startswith("BATON_")]:
        monkeypatch.delenv(var)

    def set_all(values: dict[str, str]) -> None:
        for var, value in values.items():
            monkeypatch.setenv(var, value)
    return set_all


def serve_settings(*argv: str) -> Settings:
    """The settings ``baton serve ARGV`` would run with (no server is started)."""
    return cli.settings_of(cli.build_parser().parse_args(["serve", *argv]))


def test_serve_flags_win_over_the_environment(environ):
    environ(SERVE_ENV)
    assert serve_settings() == from_env()  # no flags: the environment as it is
    flagged = serve_settings(
        "--model", "flag-model", "--openai-base-url", "http://flag:2/v1", "--openai-api-key", "flag-key",
        "--cli-command", "flag-cli {prompt}", "--max-active-runs", "0", "--agent-slots", "7", "--stall-s", "2.5",
        "--node", "flag-node", "--host", "127.0.0.2", "--port", "9001", "--db", "sqlite:///flag.db",
        "--agent", "openai",
    )
    assert flagged == Settings(
        db="sqlite:///flag.db", agent="openai", model="flag-model", openai_base_url="http://flag:2/v1",
        openai_api_key="flag-key", cli_command="flag-cli {prompt}", max_active_runs=0, agent_slots=7,
        stall_s=2.5, node="flag-node", host="127.0.0.2", port=9001,
    )
    config = flagged.engine_config()
    assert (config.node, config.max_active_runs, config.agent_slots, config.stall_s, config.model) == (
        "flag-node", 0, 7, 2.5, "flag-model")


def test_every_setting_of_design_9_has_a_serve_flag():
    flagged = {name for _, name, *_ in SERVE_FLAGS} | {"db", "flows", "agent"}  # the last three: global
    design = {"db", "flows", "agent", "openai_base_url", "openai_api_key", "model", "cli_command",
              "max_active_runs", "agent_slots", "stall_s", "host", "port", "node"}
    assert design <= flagged


def test_a_launch_model_is_the_runs_not_a_setting(environ):
    environ({"BATON_MODEL": "env-model"})
    args = cli.build_parser().parse_args(["launch", "research", "-q", "x", "--model", "run-model"])
    assert args.model == "run-model" and cli.settings_of(args).model == "env-model"


@pytest.mark.parametrize("argv,named", [
    (["--max-active-runs", "-1"], "--max-active-runs"),
    (["--stall-s", "0"], "--stall-s"),
    (["--port", "70000"], "--port"),
    (["--agent-slots", "many"], "--agent-slots"),
])
def test_a_bad_serve_flag_is_refused_naming_it(environ, argv, named):
    environ({})
    with pytest.raises((SettingsError, cli.CliError)) as refused:
        serve_settings(*argv)
    assert named in str(refused.value)


def test_the_read_timeout_and_the_output_cap_come_from_the_environment_or_serve_flags(environ):
    environ({"BATON_OPENAI_READ_TIMEOUT_S": "7.5", "BATON_MAX_OUTPUT_BYTES": "2048"})
    assert (serve_settings().openai_read_timeout_s, serve_settings().max_output_bytes) == (7.5, 2048)
    flagged = serve_settings("--openai-read-timeout-s", "3", "--max-output-bytes", "4096")
    assert (flagged.openai_read_timeout_s, flagged.max_output_bytes) == (3.0, 4096)
    assert flagged.engine_config().max_output_bytes == 4096
    with pytest.raises(SettingsError, match="BATON_MAX_OUTPUT_BYTES / --max-output-bytes must be positive"):
        from_env({"BATON_MAX_OUTPUT_BYTES": "0"})


def test_known_secrets_reach_the_engine_but_never_a_printed_setting():
    settings = Settings(openai_api_key="sk-key-1234", openai_base_url="http://u:url-pass@h/v1",
                        db="postgresql+psycopg://baton:db-pass@db/baton")
    assert set(settings.known_secrets()) == {"sk-key-1234", "url-pass", "db-pass"}
    config = settings.engine_config()
    assert set(config.known_secrets) == {"sk-key-1234", "url-pass", "db-pass"}
    for shown in (repr(settings), repr(config)):
        assert "sk-key-1234" not in shown and "url-pass" not in shown and "db-pass" not in shown


def test_connection_limits_come_from_the_environment_and_bad_ones_are_named():
    from api.settings import SettingsError, from_env

    s = from_env({"BATON_MAX_CONNECTIONS": "300", "BATON_HEADER_TIMEOUT_S": "4", "BATON_BODY_TIMEOUT_S": "9"})
    assert (s.max_connections, s.header_timeout_s, s.body_timeout_s) == (300, 4.0, 9.0)
    for var, value in (("BATON_MAX_CONNECTIONS", "0"), ("BATON_HEADER_TIMEOUT_S", "-1"), ("BATON_BODY_TIMEOUT_S", "0")):
        with pytest.raises(SettingsError, match=var):
            from_env({var: value})


def test_the_connection_cap_leaves_files_for_the_engine():
    from api.http.connections import FD_RESERVE, connection_cap

    assert connection_cap(1000, 65536) == 1000
    assert connection_cap(1000, 1024) == 1024 - FD_RESERVE


def test_access_settings_come_from_the_environment_or_serve_flags_and_bad_ones_are_named(environ, monkeypatch):
    environ({"BATON_INSECURE_NO_AUTH": "yes", "BATON_ALLOWED_HOSTS": "baton.internal, ci.internal",
             "BATON_CORS_ORIGINS": "https://console.example", "BATON_SESSION_TTL_S": "60",
             "BATON_TOKEN_FILE": "/run/baton/admin-token"})
    s = serve_settings()
    assert s.insecure_no_auth and s.allowed_hosts == ("baton.internal", "ci.internal")
    assert s.cors_origins == ("https://console.example",) and s.session_ttl_s == 60.0
    assert str(s.admin_token_file()) == "/run/baton/admin-token"
    flagged = serve_settings("--allowed-hosts", "a.example", "--session-ttl-s", "5", "--token-file", "/tmp/t")
    assert (flagged.allowed_hosts, flagged.session_ttl_s, str(flagged.admin_token_file())) == (
        ("a.example",), 5.0, "/tmp/t")
    monkeypatch.delenv("BATON_INSECURE_NO_AUTH")
    assert not serve_settings().insecure_no_auth and serve_settings("--insecure-no-auth").insecure_no_auth
    for var, value in (("BATON_INSECURE_NO_AUTH", "maybe"), ("BATON_SESSION_TTL_S", "0"),
                       ("BATON_CORS_ORIGINS", "https://console.example/path"), ("BATON_CORS_ORIGINS", "*")):
        with pytest.raises(SettingsError, match=var):
            from_env({var: value})


def test_the_admin_token_file_is_beside_a_sqlite_store_else_in_the_config_folder():
    from pathlib import Path

    assert Settings(db="sqlite:///data/baton.db").admin_token_file() == Path("data/baton.db.admin-token")
    pg = Settings(db="postgresql+psycopg://baton:pw@db.example:5433/prod").admin_token_file()
    assert pg == Path.home() / ".config" / "baton" / "admin-token-db.example-5433-prod"


def test_the_cli_token_is_a_secret_no_printed_setting_shows():
    settings = Settings(token="baton_" + "s" * 43)
    assert settings.token in settings.known_secrets() and settings.token not in repr(settings)


def test_insecure_no_auth_is_for_loopback_hosts_only():
    from api.settings import require_safe_auth

    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert require_safe_auth(Settings(host=host, insecure_no_auth=True)).host == host
    for host in ("0.0.0.0", "::", "192.168.1.5", "baton.example"):
        with pytest.raises(SettingsError, match="loopback"):
            require_safe_auth(Settings(host=host, insecure_no_auth=True))
    assert require_safe_auth(Settings(host="0.0.0.0")).host == "0.0.0.0"  # with auth, any host


# Store URLs of every shape: the settings read them without SQLAlchemy (db_url) and must read them as it does.
DB_URLS = ["sqlite:///baton.db", "sqlite://", "sqlite:///:memory:", "sqlite:////abs/path.db", "sqlite:///a%20b.db",
           "sqlite+pysqlite:///x.db?mode=ro", "sqlite:///x?", "postgresql+psycopg://u:p%40ss@h:5432/db",
           "postgresql://u:p@[::1]:5433/d", "postgresql:///db?host=/var/run/postgresql", "postgresql://h",
           "postgresql://u@h/db", "postgresql://u:@h/db", "postgresql://:pw@h/db", "postgresql://u:p:q@h/db",
           "postgresql://u:p@q@h/db", "postgresql://h:/db", "postgresql://h:abc/db", "postgresql://h:99999999/db",
           "pg+a+b://h", "garbage", "", "sqlite:/x", " sqlite:///x", "mysql://u:p%2Fw@host/db%2F1"]


@pytest.mark.parametrize("url", DB_URLS)
def test_the_store_url_is_read_as_sqlalchemy_reads_it(url: str) -> None:
    import sqlalchemy as sa

    from api.settings import db_url

    try:
        parsed = sa.engine.make_url(url)
        expected: tuple[object, ...] = (parsed.get_backend_name(), parsed.host, parsed.port, parsed.database,
                                        parsed.password)
    except Exception:
        expected = ("refused",)
    try:
        got = db_url(url)
        read: tuple[object, ...] = (got.backend, got.host, got.port, got.database, got.password)
    except ValueError:
        read = ("refused",)
    assert read == expected


@pytest.mark.parametrize(("db", "where"), [("sqlite:///some/dir/b.db", "some/dir/b.db.admin-token"),
                                           ("sqlite:///:memory:", "admin-token-local-default-_memory_"),
                                           ("postgresql://u:pw@db.example:5433/baton",
                                            "baton/admin-token-db.example-5433-baton")])
def test_the_admin_token_file_follows_the_store(db: str, where: str) -> None:
    assert str(Settings(db=db).admin_token_file()).endswith(where)
