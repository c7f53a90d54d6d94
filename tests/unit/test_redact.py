"""flows.redact: the one set of rules that keeps secrets out of events, reports, frames and logs."""

from __future__ import annotations

from flows.redact import Redactor, url_secrets, without_userinfo


def test_url_userinfo_loses_its_password_or_its_lone_token() -> None:
    r = Redactor()
    assert r("cannot reach http://user:pw1@127.0.0.1:9/v1 (refused)") == \
        "cannot reach http://user:***@127.0.0.1:9/v1 (refused)"
    assert r("git clone https://ghp_abc123@github.com/x/y") == "git clone https://***@github.com/x/y"
    assert r("postgresql+psycopg://baton:s3cret@db/baton") == "postgresql+psycopg://baton:***@db/baton"
    assert r("postgresql+psycopg://baton:***@db/baton") == "postgresql+psycopg://baton:***@db/baton"
    assert r("mail me at bo@example.com") == "mail me at bo@example.com"  # not a URL


def test_query_parameters_that_look_like_keys_are_masked() -> None:
    r = Redactor()
    assert r("GET https://h/x?api_key=abc123&page=2") == "GET https://h/x?api_key=***&page=2"
    assert r("https://h/x?page=1&access_token=t0k;sig=zz") == "https://h/x?page=1&access_token=***;sig=***"
    assert r("https://h/x?X-Amz-Signature=ff00&Password=hunter2") == "https://h/x?X-Amz-Signature=***&Password=***"
    assert r("https://h/x?q=tokens&keyword=a") == "https://h/x?q=tokens&keyword=a"


def test_an_echoed_authorization_header_is_masked_but_prose_is_not() -> None:
    r = Redactor()
    assert r("got header Authorization: Bearer sk-abc123xyz") == "got header Authorization: Bearer ***"
    assert r("Basic dXNlcjpwYXNzMQ==") == "Basic ***"
    assert r("a basic setting, the bearer of news") == "a basic setting, the bearer of news"


def test_known_secrets_are_masked_wherever_they_occur_raw_or_percent_encoded() -> None:
    r = Redactor(["sk-live-42", "p@ss/word", "ab"])
    assert r("the server echoed sk-live-42 back") == "the server echoed *** back"
    assert r("password=p%40ss%2Fword in a DSN, or p@ss/word raw") == "password=*** in a DSN, or *** raw"
    assert r("ab is too short to be masked") == "ab is too short to be masked"
    assert r("") == ""


def test_the_secret_of_a_url_is_its_password_or_a_lone_user_name() -> None:
    assert url_secrets("http://user:s%40cret@h/v1") == ("s@cret",)
    assert url_secrets("https://tok3n@h/") == ("tok3n",)
    assert url_secrets("http://localhost:11434/v1") == ()
    assert without_userinfo("http://user:secret@h:1/v1") == "http://user:***@h:1/v1"
    assert without_userinfo("http://h:1/v1") == "http://h:1/v1"
