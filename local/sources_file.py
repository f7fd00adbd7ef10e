"""``make dev SOURCES_FILE=path``: a ``SOURCES`` document with local-only conveniences, made into what the app reads.

The file has the shape of the ``SOURCES`` app setting (docs/sources.md "The SOURCES setting"), and
locally an entry may also:

- give its secrets inline: ``secret`` (the webhook secret, key or token) and ``apiSecret`` (the LMS API
  secret for fetch-back). They move into generated settings ``SOURCE_<NAME>_SECRET`` and
  ``SOURCE_<NAME>_API_SECRET`` and the entry names them (``secretSetting``, ``apiSecretSetting``), as
  a deployment names its Key Vault references;
- leave out ``registrationId``: the stack's own registration (the demo provider) is used;
- say ``"apiBaseUrl": "emulator"`` (canvas, moodle, openedx, thinkific): the LMS emulator's root for
  that kind, with the emulator's secret, and for Open edX its client id and for Thinkific its
  subdomain filled in;
- say ``"jwksUrl": "emulator"`` (canvas): the LMS emulator's dev key set, whose key signs events
  through ``POST {LMS_EMULATOR_URL}/_lms/canvas/sign``.

The result is then checked by the app's own parser (``shared.settings.parse_sources``), so the stack
refuses exactly what the function app would, with the same message. The app never sees these
conveniences: they are resolved here, in ``local/``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.settings import SourcesError, parse_sources

EMULATOR = "emulator"
EMULATED_KINDS = ("canvas", "moodle", "openedx", "thinkific")
INLINE_SECRETS = {"secret": ("secretSetting", "SECRET"), "apiSecret": ("apiSecretSetting", "API_SECRET")}


class SourcesFileError(ValueError):
    """The sources file cannot be used; the message names the source and the field."""


@dataclass(frozen=True)
class StackValues:
    """What the running stack supplies to the conveniences."""

    registration_id: str
    intake_url: str  # the function host's root, e.g. http://127.0.0.1:7071
    lms_url: str  # the LMS emulator's root
    lms_secret_setting: str  # the app setting that holds the emulator's secret
    openedx_client_id: str
    thinkific_subdomain: str


@dataclass(frozen=True)
class LocalSources:
    document: dict[str, dict[str, Any]]  # the SOURCES setting, secrets only by setting name
    settings: dict[str, str]  # generated setting -> secret value
    intake_urls: dict[str, str]  # INTAKE_URL_<NAME> -> the source's webhook URL

    @property
    def sources_json(self) -> str:
        return json.dumps(self.document)


def env_suffix(name: str) -> str:
    """``lms-eu`` -> ``LMS_EU``: a source name as part of a setting name."""
    return re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def load(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SourcesFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise SourcesFileError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict) or not document:
        raise SourcesFileError(
            f"{path} must be a JSON object of source name -> source settings, with one source or more"
        )
    return document


def resolve(document: dict[str, Any], stack: StackValues) -> LocalSources:
    """Apply the local conveniences; :func:`validate` then checks the result as the app does."""
    resolved: dict[str, dict[str, Any]] = {}
    settings: dict[str, str] = {}
    intake_urls: dict[str, str] = {}
    for name, value in document.items():
        if not isinstance(value, dict):
            raise SourcesFileError(f"source {name!r}: must be a JSON object")
        suffix = env_suffix(name)
        if f"INTAKE_URL_{suffix}" in intake_urls:
            raise SourcesFileError(f"source {name!r}: another source's name gives the same setting names ({suffix})")
        entry = dict(value)
        for field, (setting_field, setting_suffix) in INLINE_SECRETS.items():
            if field not in entry:
                continue
            secret = entry.pop(field)
            if setting_field in entry:
                raise SourcesFileError(
                    f"source {name!r}: give {field} (inline, local only) or {setting_field}, not both"
                )
            if not isinstance(secret, str) or not secret.strip():
                raise SourcesFileError(f"source {name!r}: {field} must be a non-empty string")
            setting = f"SOURCE_{suffix}_{setting_suffix}"
            settings[setting] = secret
            entry[setting_field] = setting
        entry.setdefault("registrationId", stack.registration_id)
        _emulated(name, entry, stack)
        resolved[name] = entry
        intake_urls[f"INTAKE_URL_{suffix}"] = f"{stack.intake_url}/api/webhooks/{name}"
    return LocalSources(resolved, settings, intake_urls)


def _emulated(name: str, entry: dict[str, Any], stack: StackValues) -> None:
    kind = entry.get("kind", "cloudevents")
    if entry.get("jwksUrl") == EMULATOR:
        if kind != "canvas":
            raise SourcesFileError(f"source {name!r}: jwksUrl 'emulator' is for canvas sources only")
        entry["jwksUrl"] = f"{stack.lms_url}/canvas/jwks"
    if entry.get("apiBaseUrl") != EMULATOR:
        return
    if kind not in EMULATED_KINDS:
        raise SourcesFileError(
            f"source {name!r}: apiBaseUrl 'emulator' is for fetch-back kinds ({', '.join(EMULATED_KINDS)}), not {kind}"
        )
    if "apiSecretSetting" in entry:
        raise SourcesFileError(
            f"source {name!r}: with apiBaseUrl 'emulator' the API secret is the emulator's; leave apiSecret out"
        )
    entry["apiBaseUrl"] = f"{stack.lms_url}/{kind}"
    entry["apiSecretSetting"] = stack.lms_secret_setting
    fixed = {
        "openedx": ("apiClientId", stack.openedx_client_id),
        "thinkific": ("apiSubdomain", stack.thinkific_subdomain),
    }
    if kind in fixed:
        field, value = fixed[kind]
        if entry.setdefault(field, value) != value:
            raise SourcesFileError(f"source {name!r}: the LMS emulator's {field} is {value!r}; leave {field} out")


def validate(local: LocalSources) -> None:
    """The app's own check of ``SOURCES``; its message is passed on unchanged."""
    try:
        parse_sources(local.sources_json)
    except SourcesError as exc:
        raise SourcesFileError(str(exc)) from exc
