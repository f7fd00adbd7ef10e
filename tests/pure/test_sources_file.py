"""``make dev SOURCES_FILE=``: the local conveniences (inline secrets, the stack's registration, the LMS
emulator) and the app's own validation of the result (local/sources_file.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from local.sources_file import LocalSources, SourcesFileError, StackValues, env_suffix, load, resolve, validate
from shared.settings import parse_sources

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "local/samples/sources.all-kinds.json"
STACK = StackValues(
    registration_id="reg-stack",
    intake_url="http://127.0.0.1:7071",
    lms_url="http://127.0.0.1:7075",
    lms_secret_setting="LMS_EMULATOR_SECRET",
    openedx_client_id="vlsync-dev",
    thinkific_subdomain="acme",
)


def resolved(document: dict[str, Any]) -> LocalSources:
    local = resolve(document, STACK)
    validate(local)
    return local


def test_the_sample_has_one_source_of_each_kind_and_is_valid_as_the_app_reads_it() -> None:
    local = resolved(load(SAMPLE))
    sources = parse_sources(local.sources_json)
    assert sorted(s.kind for s in sources.values()) == sorted(
        ["cloudevents", "canvas", "moodle", "openedx", "thinkific", "docebo", "eventgrid", "mapped"]
    )
    assert set(local.intake_urls) == {f"INTAKE_URL_{env_suffix(name)}" for name in sources}
    assert local.intake_urls["INTAKE_URL_MOODLE"] == "http://127.0.0.1:7071/api/webhooks/moodle"
    assert all(s.registration_id == "reg-stack" for s in sources.values())


def test_inline_secrets_become_generated_settings() -> None:
    local = resolved(
        {"lms-eu": {"kind": "moodle", "secret": "tok", "apiBaseUrl": "https://m.example", "apiSecret": "ws"}}
    )
    entry = local.document["lms-eu"]
    assert entry["secretSetting"] == "SOURCE_LMS_EU_SECRET"
    assert entry["apiSecretSetting"] == "SOURCE_LMS_EU_API_SECRET"
    assert "secret" not in entry
    assert "apiSecret" not in entry
    assert local.settings == {"SOURCE_LMS_EU_SECRET": "tok", "SOURCE_LMS_EU_API_SECRET": "ws"}
    assert local.intake_urls == {"INTAKE_URL_LMS_EU": "http://127.0.0.1:7071/api/webhooks/lms-eu"}


@given(secret=st.text(min_size=1).filter(lambda s: s.strip() and len(s.strip()) > 3))
def test_no_inline_secret_reaches_the_sources_document(secret: str) -> None:
    local = resolve({"s": {"kind": "thinkific", "secret": secret, "apiSecret": secret * 2}}, STACK)
    without = resolve({"s": {"kind": "thinkific", "secret": "x", "apiSecret": "y"}}, STACK)
    assert local.document == without.document  # the document never depends on the secrets' values
    text = json.dumps(local.document, ensure_ascii=False)
    assume(secret not in json.dumps(without.document, ensure_ascii=False))  # e.g. "API_": part of a name
    assert secret not in text
    assert set(local.settings.values()) == {secret, secret * 2}


def test_a_given_registration_is_kept() -> None:
    local = resolved({"s": {"kind": "cloudevents", "secretSetting": "X", "registrationId": "own"}})
    assert local.document["s"]["registrationId"] == "own"


@pytest.mark.parametrize(
    ("kind", "extra"),
    [
        ("canvas", {"rootAccountId": "1"}),
        ("moodle", {"secret": "t"}),
        ("openedx", {"secret": "k"}),
        ("thinkific", {"secret": "k"}),
    ],
)
def test_emulator_fills_the_kinds_root_and_credentials(kind: str, extra: dict[str, str]) -> None:
    local = resolved({"s": {"kind": kind, "apiBaseUrl": "emulator", **extra}})
    entry = local.document["s"]
    assert entry["apiBaseUrl"] == f"http://127.0.0.1:7075/{kind}"
    assert entry["apiSecretSetting"] == "LMS_EMULATOR_SECRET"
    if kind == "openedx":
        assert entry["apiClientId"] == "vlsync-dev"
    if kind == "thinkific":
        assert entry["apiSubdomain"] == "acme"


def test_canvas_jwks_from_the_emulator() -> None:
    local = resolved({"c": {"kind": "canvas", "rootAccountId": "1", "jwksUrl": "emulator"}})
    assert local.document["c"]["jwksUrl"] == "http://127.0.0.1:7075/canvas/jwks"


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ({"kind": "moodle", "secret": "a", "secretSetting": "B"}, "secret (inline, local only) or secretSetting"),
        ({"kind": "moodle", "secret": " "}, "secret must be a non-empty string"),
        ({"kind": "docebo", "secret": "a", "apiBaseUrl": "emulator"}, "not docebo"),
        ({"kind": "moodle", "secret": "a", "apiBaseUrl": "emulator", "apiSecret": "x"}, "leave apiSecret out"),
        (
            {"kind": "openedx", "secret": "a", "apiBaseUrl": "emulator", "apiClientId": "other"},
            "apiClientId is 'vlsync-dev'",
        ),
        (
            {"kind": "thinkific", "secret": "a", "apiBaseUrl": "emulator", "apiSubdomain": "zed"},
            "apiSubdomain is 'acme'",
        ),
        ({"kind": "moodle", "secret": "a", "jwksUrl": "emulator"}, "canvas sources only"),
        ("not an object", "must be a JSON object"),
    ],
)
def test_local_mistakes_are_named(entry: Any, fragment: str) -> None:
    with pytest.raises(SourcesFileError, match=r"source 's'") as caught:
        resolve({"s": entry}, STACK)
    assert fragment in str(caught.value)


def test_the_apps_own_message_for_an_invalid_entry() -> None:
    local = resolve({"c": {"kind": "canvas", "jwksUrl": "emulator"}}, STACK)
    with pytest.raises(SourcesFileError) as caught:
        validate(local)
    assert str(caught.value).startswith("source 'c': ")
    assert "rootAccountUuid" in str(caught.value)
    with pytest.raises(SourcesFileError, match="kind 'blackboard' is not one of"):
        validate(resolve({"b": {"kind": "blackboard"}}, STACK))


def test_two_names_with_one_setting_name_are_refused() -> None:
    with pytest.raises(SourcesFileError, match="same setting names"):
        resolve({"a-b": {"secretSetting": "X"}, "a_b": {"secretSetting": "Y"}}, STACK)


@pytest.mark.parametrize(
    ("text", "fragment"), [("{", "not valid JSON"), ("[]", "JSON object"), ("{}", "one source or more")]
)
def test_load_refuses_what_is_no_sources_document(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "sources.json"
    path.write_text(text)
    with pytest.raises(SourcesFileError, match=fragment):
        load(path)
    with pytest.raises(SourcesFileError, match="cannot read"):
        load(tmp_path / "missing.json")


def test_the_readme_entries_per_platform_are_valid_sources() -> None:
    """README "Connect your LMS": every example entry is read by the app as it is shown."""
    section = (REPO / "README.md").read_text(encoding="utf-8").split("\n## Connect your LMS", 1)[1].split("\n## ", 1)[0]
    blocks = [block.split("```", 1)[0] for block in section.split("```json\n")[1:]]
    entries = json.loads("{" + ",".join(blocks) + "}")
    sources = parse_sources(json.dumps(entries))
    assert sorted(s.kind for s in sources.values()) == sorted(
        ["canvas", "moodle", "openedx", "thinkific", "docebo", "eventgrid", "mapped"]
    )
