"""Contracts between the code and the files around it: host.json, bindings, docs, sample settings."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from shared import queue
from shared.problems import CATALOGUE
from shared.schema_export import EXAMPLE_DELETE, EXAMPLE_UPSERT, event_schema, render
from shared.settings import STORAGE_CONNECTION, Settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bindings() -> dict[str, list[dict[str, Any]]]:
    # get_functions() may be called once per app object (it keeps state); this is that once.
    import function_app

    return {f.get_function_name(): f.get_bindings_dict()["bindings"] for f in function_app.app.get_functions()}


def test_host_json_encoding_matches_the_producer() -> None:
    host = json.loads((REPO / "host.json").read_text())
    assert host["extensions"]["queues"].get("messageEncoding", "base64") == queue.MESSAGE_ENCODING


def test_worker_binding_uses_the_setting_and_named_connection(bindings: dict[str, list[dict[str, Any]]]) -> None:
    [trigger] = bindings["apply_content_command"]
    assert trigger["type"] == "queueTrigger"
    assert trigger["queueName"] == "%CONTENT_QUEUE_NAME%"
    assert trigger["connection"] == STORAGE_CONNECTION


def test_intake_route_and_auth(bindings: dict[str, list[dict[str, Any]]]) -> None:
    trigger = bindings["receive_webhook"][0]
    assert trigger["route"] == "webhooks/{source}"
    assert [str(getattr(m, "value", m)) for m in trigger["methods"]] == ["POST", "OPTIONS"]
    assert str(getattr(trigger["authLevel"], "value", trigger["authLevel"])) == "function"


def test_function_app_only_registers_blueprints() -> None:
    code = (REPO / "function_app.py").read_text()
    assert "register_functions" in code
    assert not re.search(r"@app\.", code)


def test_published_event_schema_is_current() -> None:
    assert (REPO / "docs/event-schema.json").read_text() == render(), "run `make schema`"


@pytest.mark.parametrize("example", [EXAMPLE_UPSERT, [EXAMPLE_UPSERT, EXAMPLE_DELETE]])
def test_schema_examples_validate(example: Any) -> None:
    jsonschema.validate(example, event_schema())


def test_schema_rejects_what_the_intake_rejects() -> None:
    bad = {**EXAMPLE_UPSERT, "data": {**EXAMPLE_UPSERT["data"], "level": "expert"}}  # type: ignore[dict-item]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, event_schema())


def test_every_problem_type_is_documented() -> None:
    doc = (REPO / "docs/problems.md").read_text()
    for problem in CATALOGUE:
        row = next((line for line in doc.splitlines() if f"`{problem.uri}`" in line), None)
        assert row is not None, problem.uri
        assert f"| {problem.status} |" in row


def setting_names() -> set[str]:
    names = set()
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        names.add(alias if isinstance(alias, str) else alias.choices[0])  # type: ignore[union-attr]
    return names


def test_sample_settings_use_known_names() -> None:
    sample = json.loads((REPO / "local.settings.sample.json").read_text())["Values"]
    platform = {"AzureWebJobsStorage", "FUNCTIONS_WORKER_RUNTIME"}
    unknown = set(sample) - setting_names() - platform - {"DEMO_WEBHOOK_SECRET"}
    assert not unknown


def test_readme_documents_every_setting() -> None:
    readme = (REPO / "README.md").read_text()
    for name in setting_names():
        assert f"`{name}`" in readme, name


def test_sample_settings_name_the_local_stacks_identities() -> None:
    """``func start`` with the sample signs in as the stack's app through the stack's identity (make dev)."""
    from local import stack
    from local.tokens import DEFAULT_TENANT_ID

    sample = json.loads((REPO / "local.settings.sample.json").read_text())["Values"]
    assert sample["GRAPH_AUTH_MODE"] == "app"
    assert sample["AZURE_CLIENT_ID"] == stack.STACK_IDENTITY_CLIENT_ID
    assert sample["VIVA_APP_CLIENT_ID"] == stack.STACK_APP_CLIENT_ID
    assert sample["VIVA_APP_TENANT_ID"] == DEFAULT_TENANT_ID
