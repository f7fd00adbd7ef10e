"""The pydantic models agree with Microsoft's Graph metadata (property names, Edm types, enums)."""

from __future__ import annotations

import json
import types
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from shared.models import LearningContent, LearningProvider, Level

METADATA = json.loads(
    (Path(__file__).resolve().parents[2] / "local/graph_metadata/learning-schemas.v1.0.json").read_text()
)
ENTITIES = [("learningContent", LearningContent), ("learningProvider", LearningProvider)]
EDM_TO_PY = {
    "Edm.String": str,
    "Edm.Boolean": bool,
    "Edm.Int32": int,
    "Edm.Duration": str,
    "Edm.DateTimeOffset": str,
    "Collection(Edm.String)": list,
    "graph.level": Level,
}


def graph_properties(entity: str) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in METADATA["entityTypes"][entity]["properties"]}


def model_properties(model: type[BaseModel]) -> dict[str, Any]:
    return {field.alias or name: field.annotation for name, field in model.model_fields.items()}


def base_type(annotation: Any) -> Any:
    """Strip ``X | None`` and ``Annotated[...]`` down to the Python type."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        [inner] = [a for a in typing.get_args(annotation) if a is not type(None)]
        return base_type(inner)
    if origin is typing.Annotated:
        return base_type(typing.get_args(annotation)[0])
    return origin or annotation


@pytest.mark.parametrize(("entity", "model"), ENTITIES)
def test_model_has_exactly_the_metadata_properties(entity: str, model: type[BaseModel]) -> None:
    # ``id`` is the read-only key inherited from graph.entity; bodies never carry it.
    assert set(model_properties(model)) == set(graph_properties(entity))


@pytest.mark.parametrize(("entity", "model"), ENTITIES)
def test_model_types_follow_edm_types(entity: str, model: type[BaseModel]) -> None:
    props = model_properties(model)
    for name, prop in graph_properties(entity).items():
        assert base_type(props[name]) is EDM_TO_PY[prop["type"]], name


@pytest.mark.parametrize(("entity", "model"), ENTITIES)
def test_non_nullable_properties_are_required(entity: str, model: type[BaseModel]) -> None:
    required = {f.alias or n for n, f in model.model_fields.items() if f.is_required()}
    non_nullable = {n for n, p in graph_properties(entity).items() if p.get("nullable") is False}
    assert required == non_nullable


def test_level_members_match_the_enum() -> None:
    assert [m.value for m in Level] == [m["name"] for m in METADATA["enumTypes"]["level"]["members"]]
