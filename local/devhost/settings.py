"""App settings: ``local.settings.json`` and ``%SETTING%`` binding expressions.

The Functions host exposes app settings as environment variables, and apps read them at import
time, so the file must be applied to ``os.environ`` before the app module is imported. Variables
that are already set win, as they do with Core Tools, so a shell or CI can override the file.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, MutableMapping
from pathlib import Path

_EXPRESSION = re.compile(r"%([^%]+)%")


class SettingsError(ValueError):
    """The settings file or a binding expression cannot be used."""


def read_local_settings(path: Path) -> dict[str, str]:
    """Return the ``Values`` of a local.settings.json file; a missing file means no values."""
    if not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise SettingsError(f"{path} must hold a JSON object")
    if doc.get("IsEncrypted") is True:
        raise SettingsError(f"{path} is encrypted (IsEncrypted=true); decrypt it first")
    values = doc.get("Values") or {}
    if not isinstance(values, dict):
        raise SettingsError(f"{path}: 'Values' must be an object")
    # The host sees every setting as a string; JSON booleans/numbers are stringified like .NET.
    return {str(k): _as_setting_text(v) for k, v in values.items() if v is not None}


def _as_setting_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def apply_settings(values: Mapping[str, str], environ: MutableMapping[str, str]) -> list[str]:
    """Copy ``values`` into ``environ`` without overriding what is set; return the keys applied."""
    applied = [key for key in values if key not in environ]
    for key in applied:
        environ[key] = values[key]
    return applied


def load_local_settings(path: Path, environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Apply a local.settings.json file to the environment (``os.environ`` by default)."""
    target = os.environ if environ is None else environ
    return apply_settings(read_local_settings(path), target)


def resolve_binding_expression(value: str, settings: Mapping[str, str]) -> str:
    """Replace each ``%NAME%`` with the setting ``NAME``, as the host does for binding values.

    A missing setting is an error: the host refuses to index such a function too.
    """

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in settings:
            raise SettingsError(f"binding expression %{name}% refers to setting {name!r}, which is not set")
        return settings[name]

    return _EXPRESSION.sub(lookup, value)
