"""local.settings.json loading and %SETTING% binding expressions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from local.devhost.settings import (
    SettingsError,
    apply_settings,
    load_local_settings,
    read_local_settings,
    resolve_binding_expression,
)


def write(path: Path, doc: object) -> Path:
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_values_are_applied_without_overriding_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path / "local.settings.json", {"IsEncrypted": False, "Values": {"A": "file", "B": "file"}})
    environ = {"A": "env"}
    applied = load_local_settings(path, environ)
    assert environ == {"A": "env", "B": "file"}
    assert applied == ["B"]


def test_missing_file_is_fine(tmp_path: Path) -> None:
    environ: dict[str, str] = {}
    assert load_local_settings(tmp_path / "absent.json", environ) == []
    assert environ == {}


def test_non_string_values_become_host_style_strings(tmp_path: Path) -> None:
    path = write(tmp_path / "s.json", {"Values": {"FLAG": True, "N": 3, "NULL": None}})
    assert read_local_settings(path) == {"FLAG": "true", "N": "3"}


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ({"IsEncrypted": True, "Values": {}}, "encrypted"),
        ({"Values": ["A"]}, "'Values' must be an object"),
        ([1, 2], "JSON object"),
    ],
)
def test_unusable_files_are_rejected(tmp_path: Path, doc: object, fragment: str) -> None:
    with pytest.raises(SettingsError, match=fragment):
        read_local_settings(write(tmp_path / "s.json", doc))


def test_invalid_json_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{", encoding="utf-8")
    with pytest.raises(SettingsError, match=r"broken\.json"):
        read_local_settings(path)


def test_apply_settings_reports_only_new_keys() -> None:
    environ = {"X": "1"}
    assert apply_settings({"X": "2", "Y": "3"}, environ) == ["Y"]
    assert environ["X"] == "1"


def test_binding_expressions_are_resolved_anywhere_in_the_value() -> None:
    settings = {"Q": "orders", "ENV": "dev"}
    assert resolve_binding_expression("%Q%", settings) == "orders"
    assert resolve_binding_expression("%Q%-%ENV%", settings) == "orders-dev"
    assert resolve_binding_expression("webhooks/{source}", settings) == "webhooks/{source}"


def test_missing_setting_in_expression_is_an_error() -> None:
    with pytest.raises(SettingsError, match="'MISSING'"):
        resolve_binding_expression("%MISSING%", {})
