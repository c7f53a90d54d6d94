"""What ships as documentation says what the code does: every setting in the README, no dangling file in OpenAPI."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from api.http.openapi import document
from api.settings import _ENV, Settings

README = Path(__file__).resolve().parents[2] / "README.md"
FILE_REF = re.compile(r"[\w./-]+\.(?:md|py|txt|toml|ya?ml|json|cfg|ini)\b")


def settings_table() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("## Settings")
    return text[start:text.index("\n## ", start + 1)]


def test_every_setting_is_read_from_a_variable_and_documented_in_the_readme_settings_table():
    read = {name for name, _ in _ENV.values()}
    assert read == {f.name for f in dataclasses.fields(Settings)}, "a setting no BATON_* variable sets"
    rows = [line for line in settings_table().splitlines() if line.startswith("| `BATON_")]
    documented = {var for row in rows for var in re.findall(r"`(BATON_[A-Z0-9_]+)`", row.split("|")[1])}
    assert set(_ENV) - documented == set(), "settings missing from the README's settings table"
    assert documented - set(_ENV) == set(), "the README documents a variable baton does not read"


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def test_the_openapi_document_points_to_no_file_that_does_not_ship():
    for text in _strings(document()):
        assert "DESIGN" not in text and "§" not in text, text  # the design contract is not shipped
        for found in FILE_REF.findall(text):
            assert found.startswith("/api/"), (found, text)  # a route (/api/openapi.json), not a file
