"""checkov's Bicep checks (offline): no failed check, every suppression inline and explained."""

from __future__ import annotations

import re
from typing import Any

SKIP = re.compile(r"//\s*checkov:skip=(?P<id>CKV2?_[A-Z]+_\d+)(?::\s*(?P<reason>.*))?")


def _ids(checks: list[dict[str, Any]]) -> list[str]:
    return [f"{c['check_id']} {c['resource']} ({c['file_path']})" for c in checks]


def test_no_failed_check(checkov_report: dict[str, Any]) -> None:
    failed = checkov_report["results"]["failed_checks"]
    assert checkov_report["summary"]["failed"] == 0, _ids(failed)
    assert checkov_report["_exit_code"] == 0


def test_the_raw_resources_were_checked(checkov_report: dict[str, Any]) -> None:
    results = checkov_report["results"]
    seen = {c["resource"].rsplit(".", 1)[0] for c in results["passed_checks"] + results["skipped_checks"]}
    assert {
        "Microsoft.Storage/storageAccounts",
        "Microsoft.Storage/storageAccounts/blobServices/containers",
        "Microsoft.Web/serverfarms",
        "Microsoft.Web/sites",
        "Microsoft.Web/sites/config",
        "Microsoft.KeyVault/vaults",
    } <= seen
    assert checkov_report["summary"]["passed"] >= 20


def test_every_suppression_is_inline_explained_and_used(
    checkov_report: dict[str, Any], infra_text: dict[str, str]
) -> None:
    comments = []
    for path, text in infra_text.items():
        lines = text.splitlines()
        for number, line in enumerate(lines):
            match = SKIP.search(line)
            if not match:
                continue
            comments.append((path, match["id"]))
            assert len(match["reason"] or "") >= 20, f"{path}:{number + 1}: explain the skip"
            # Inside a resource body: checkov ignores a skip above the `resource` line.
            above = [line for line in lines[:number] if re.match(r"^(resource|module|output|param|var|})", line)]
            assert above, f"{path}:{number + 1}: skip outside a resource"
            assert above[-1].startswith("resource "), f"{path}:{number + 1}: skip outside a resource"
    skipped = checkov_report["results"]["skipped_checks"]
    for check in skipped:
        reason = check["check_result"].get("suppress_comment", "")
        assert reason not in ("", "No comment provided"), check["check_id"]
    # One skipped result per comment: a skip that matched nothing would be dead text.
    assert sorted(c["check_id"] for c in skipped) == sorted(cid for _, cid in comments)
