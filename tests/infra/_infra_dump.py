"""Run by ``.venv-infra/bin/python`` (not the app venv): parse the infra files into one JSON document.

Prints ``{"pycep": <version>, "bicep": {<path>: {"tree": ...} | {"error": ...}}, "azure_yaml": ...}``
on stdout. Which pycep it imports is up to ``PYTHONPATH`` (the tests point it at pycep 0.7.1).
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import version
from pathlib import Path

import yaml
from pycep import BicepParser


def main(repo: Path) -> None:
    parser = BicepParser()
    bicep: dict[str, dict[str, object]] = {}
    for path in sorted((repo / "infra").rglob("*.bicep")):
        rel = path.relative_to(repo).as_posix()
        try:
            bicep[rel] = {"tree": parser.parse(file_path=path)}
        except Exception as exc:  # every parser error is a result to report
            bicep[rel] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"}
    import pycep

    document = {
        "pycep": version("pycep-parser"),
        "pycep_path": str(Path(pycep.__file__).parent),
        "bicep": bicep,
        "azure_yaml": yaml.safe_load((repo / "azure.yaml").read_text()),
    }
    json.dump(document, sys.stdout, default=str)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
