"""Persistence with ``--snapshot``: the journal, its replay, compaction, and crashes at every step.

The acknowledged-write rule: whatever the emulator answered before it died is there after a restart.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from local import tokens
from local.graph_emulator import EmulatorState, run_in_thread
from local.graph_emulator.persistence import JournalCorrupt
from shared.odata import key_literal

from .conftest import ADMIN, APP_WRITE, CONTENT_BODY, PROVIDER_BODY, PROVIDERS, REPO_ROOT, content_url

TID = tokens.DEFAULT_TENANT_ID


def _content(external_id: str, title: str = "t") -> dict[str, Any]:
    return {"externalId": external_id, "title": title, "contentWebUrl": "https://x.example/c", "languageTag": "en"}


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def _view(state: EmulatorState) -> dict[str, Any]:
    return state.dump()


def test_every_write_is_journalled_and_replayed_without_a_clean_stop(tmp_path: Path) -> None:
    snapshot = tmp_path / "graph.json"
    state = EmulatorState(snapshot, fsync="always")
    provider = state.create_provider(TID, {"displayName": "P"}, registered_by_app_id="app-a")
    first, created = state.put_content(TID, provider["id"], _content("a"))
    assert created
    state.put_content(TID, provider["id"], _content("b"))
    state.put_content(TID, provider["id"], _content("a", "a, second"))  # keeps its id and position
    state.update_provider(TID, provider["id"], {"displayName": "Renamed"})
    state.delete_content(TID, provider["id"], first["id"])
    state.put_content(TID, provider["id"], _content("a", "a, again"))  # back, at the end, with a new id
    other = state.create_provider(TID, {"displayName": "gone"})
    state.delete_provider(TID, other["id"])
    expected = _view(state)

    assert _files(tmp_path) == ["graph.json.journal.000000000001"]  # no snapshot rewrite per write
    lines = (tmp_path / "graph.json.journal.000000000001").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["s"] for line in lines] == list(range(1, 10))

    # No close(): as after a kill. The new state replays the journal, then folds it into the snapshot.
    reloaded = EmulatorState(snapshot)
    assert _view(reloaded) == expected
    assert [c["externalId"] for c in reloaded.contents(TID, provider["id"])] == ["b", "a"]
    assert reloaded.registered_by_app_id(TID, provider["id"]) == "app-a"
    assert _files(tmp_path) == ["graph.json"]
    assert json.loads(snapshot.read_text(encoding="utf-8"))["journalSeq"] == 9
    reloaded.close()
    state.close()


def test_compaction_folds_the_journal_into_the_snapshot(tmp_path: Path) -> None:
    snapshot = tmp_path / "graph.json"
    state = EmulatorState(snapshot, compact_min_entries=5, background_compaction=False)
    provider_id = state.create_provider(TID, {"displayName": "P"})["id"]
    for index in range(12):
        state.put_content(TID, provider_id, _content(f"c{index}"))
    journal = state.journal
    assert journal is not None
    assert journal.compactions == 2  # after entry 6 and after entry 12 (more than max(5, items) each time)
    saved = json.loads(snapshot.read_text(encoding="utf-8"))
    assert saved["journalSeq"] == 12
    assert len(saved["tenants"][TID]["providers"][0]["learningContents"]) == 11  # the 12th is journalled
    assert _files(tmp_path) == ["graph.json", "graph.json.journal.000000000013"]
    expected = _view(state)
    assert _view(EmulatorState(snapshot)) == expected
    state.close()


def test_background_compaction_and_close(tmp_path: Path) -> None:
    snapshot = tmp_path / "graph.json"
    state = EmulatorState(snapshot, compact_min_entries=3)
    provider_id = state.create_provider(TID, {"displayName": "P"})["id"]
    for index in range(10):
        state.put_content(TID, provider_id, _content(f"c{index}"))
    assert state.journal is not None
    state.journal.wait_compaction(10)
    assert state.journal.compactions >= 1
    assert state.journal.last_error is None
    expected = _view(state)
    state.close()
    assert _files(tmp_path) == ["graph.json"]  # a clean stop leaves one file
    assert _view(EmulatorState(snapshot)) == expected


def test_a_crash_while_the_snapshot_is_written_loses_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot = tmp_path / "graph.json"
    state = EmulatorState(snapshot, compact_min_entries=2, background_compaction=False)
    provider_id = state.create_provider(TID, {"displayName": "P"})["id"]

    def crash(*_: object) -> None:
        raise OSError("disk gone during the rename")

    monkeypatch.setattr(os, "replace", crash)  # persistence renames through os.replace
    state.put_content(TID, provider_id, _content("c0"))  # entry 2: not yet due
    with pytest.raises(OSError, match="disk gone"):
        state.put_content(TID, provider_id, _content("c1"))  # entry 3: due, and the rename fails
    # The write that triggered the compaction was journalled before it: it counts as acknowledged.
    expected = _view(state)
    assert not any(name.endswith(".tmp") for name in _files(tmp_path))  # the temporary file is gone
    monkeypatch.undo()
    assert _view(EmulatorState(snapshot)) == expected


def test_a_crash_between_rename_and_segment_delete_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = tmp_path / "graph.json"
    state = EmulatorState(snapshot, compact_min_entries=2, background_compaction=False)
    provider_id = state.create_provider(TID, {"displayName": "P"})["id"]
    monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: None)  # the sealed segments stay
    for index in range(7):
        state.put_content(TID, provider_id, _content(f"c{index}", f"rev {index}"))
    state.put_content(TID, provider_id, _content("c0", "c0 updated after the snapshot"))
    expected = _view(state)
    monkeypatch.undo()
    names = _files(tmp_path)
    assert "graph.json" in names
    assert sum(n.startswith("graph.json.journal.") for n in names) >= 2
    assert _view(EmulatorState(snapshot)) == expected  # old entries skipped by journalSeq, newer ones applied


def test_a_torn_last_line_is_ignored_and_a_corrupt_one_refused(tmp_path: Path) -> None:
    snapshot = tmp_path / "graph.json"
    state = EmulatorState(snapshot)
    provider_id = state.create_provider(TID, {"displayName": "P"})["id"]
    state.put_content(TID, provider_id, _content("a"))
    expected = _view(state)
    assert state.journal is not None
    state.journal.close()
    segment = tmp_path / "graph.json.journal.000000000001"
    with segment.open("ab") as handle:
        handle.write(b'{"s": 3, "op": "content", "t": "x", "p": "y", "c": {"id": "half')  # cut by a crash
    assert _view(EmulatorState(snapshot)) == expected

    broken = tmp_path / "broken" / "graph.json"
    broken.parent.mkdir()
    (broken.parent / "graph.json.journal.000000000001").write_text('{"s": 1, "op": "clear"}\nnot json\n{"s": 3}\n')
    with pytest.raises(JournalCorrupt, match=":2:"):
        EmulatorState(broken)


def test_an_older_snapshot_without_journal_seq_loads_and_takes_a_journal(tmp_path: Path) -> None:
    snapshot = tmp_path / "graph.json"
    provider = {**PROVIDER_BODY, "id": "p-old", "learningContents": [{**_content("x"), "id": "c-1"}]}
    snapshot.write_text(json.dumps({"version": 1, "tenants": {TID: {"providers": [provider]}}}), encoding="utf-8")
    state = EmulatorState(snapshot)
    assert state.registered_by_app_id(TID, "p-old") is None
    state.put_content(TID, "p-old", _content("y"))
    expected = _view(state)
    assert _view(EmulatorState(snapshot)) == expected  # the journal entry (seq 1) is after the old snapshot (0)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["put", "put", "put", "delete", "rename", "clear"]), st.integers(0, 5)),
        max_size=40,
    ),
    bound=st.integers(1, 8),
)
def test_replay_equals_the_live_state_for_any_history(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, int]], bound: int
) -> None:
    snapshot = tmp_path_factory.mktemp("prop") / "graph.json"
    state = EmulatorState(snapshot, compact_min_entries=bound, background_compaction=False)
    provider_id = state.create_provider(TID, {"displayName": "P"})["id"]
    for op, key in ops:
        if state.provider(TID, provider_id) is None:
            provider_id = state.create_provider(TID, {"displayName": "P"})["id"]
        if op == "put":
            state.put_content(TID, provider_id, _content(f"k{key}", f"v{len(ops)}{key}"))
        elif op == "delete":
            found = state.content_by_external_id(TID, provider_id, f"k{key}")
            if found:
                state.delete_content(TID, provider_id, found["id"])
        elif op == "rename":
            state.update_provider(TID, provider_id, {"displayName": f"P{key}"})
        else:
            state.clear()
    reloaded = EmulatorState(snapshot)
    assert _view(reloaded) == _view(state)
    reloaded.close()
    state.close()


# -- the process killed mid-run --------------------------------------------------------------------
def _start(snapshot: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "local.graph_emulator", "--port", "0", "--log-level", "WARNING"]
    command += ["--snapshot", str(snapshot), *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    assert line.startswith("graph emulator listening on "), line
    return process, line.removeprefix("graph emulator listening on ")


@pytest.mark.parametrize("kill_after_acks", [15, 70, 170])
def test_sigkill_mid_run_loses_no_acknowledged_write(tmp_path: Path, kill_after_acks: int) -> None:
    snapshot = tmp_path / "graph.json"
    # A small compaction bound so the kill lands among compactions (background) as well as appends.
    process, url = _start(snapshot, "--compact-after", "20")
    acknowledged: dict[str, int] = {}  # externalId -> newest revision answered 202
    stop = threading.Event()
    with process, httpx.Client(base_url=url, timeout=5) as client:
        provider_id = client.post(PROVIDERS, json=PROVIDER_BODY, headers=ADMIN).json()["id"]

        def writer() -> None:
            index = 0
            while not stop.is_set():
                # New items, and one item updated again and again (its newest acknowledged revision counts).
                ext = f"hot-{index % 3}" if index % 2 else f"item-{index}"
                body = {**CONTENT_BODY, "title": f"rev {index}"}
                try:
                    answer = client.patch(
                        content_url(provider_id, f"(externalId={key_literal(ext)})"), json=body, headers=APP_WRITE
                    )
                except httpx.TransportError:
                    return  # the process died under this request: it was never acknowledged
                if answer.status_code == 202:
                    acknowledged[ext] = index
                index += 1

        thread = threading.Thread(target=writer)
        thread.start()
        deadline = time.monotonic() + 60
        while len(acknowledged) < kill_after_acks and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)  # mid-run: the writer is still sending
        process.wait(10)
        stop.set()
        thread.join(10)
    assert len(acknowledged) >= kill_after_acks, "the writer stopped before the kill"
    state = EmulatorState(snapshot)
    for ext, revision in acknowledged.items():
        found = state.content_by_external_id(TID, provider_id, ext)
        assert found is not None, f"acknowledged write of {ext} lost"
        stored = int(found["title"].removeprefix("rev "))
        assert stored >= revision, (ext, stored, revision)  # newer only if unacknowledged

    # And the restarted emulator serves the same state.
    process, url = _start(snapshot)
    try:
        with httpx.Client(base_url=url, timeout=5) as client:
            listed = client.get(f"{PROVIDERS}/{provider_id}/learningContents?$top=100", headers=APP_WRITE)
            assert listed.status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(20)
    assert process.returncode == 0
    assert _files(tmp_path) == ["graph.json"]


def test_run_in_thread_keeps_its_state_across_restarts_through_the_journal(tmp_path: Path) -> None:
    snapshot = tmp_path / "graph.json"
    with run_in_thread(snapshot=snapshot) as emu, httpx.Client(base_url=emu.url, timeout=5) as client:
        provider_id = client.post(PROVIDERS, json=PROVIDER_BODY, headers=ADMIN).json()["id"]
        client.patch(content_url(provider_id, "(externalId='a')"), json=CONTENT_BODY, headers=APP_WRITE)
        files = client.get("/_emulator/persistence").json()
        assert files["snapshot"] == str(snapshot)
        assert files["journal"] == [str(tmp_path / "graph.json.journal.000000000001")]
        assert files["pendingEntries"] == 2
        assert files["fsync"] == "interval"
    with run_in_thread(snapshot=snapshot) as emu, httpx.Client(base_url=emu.url, timeout=5) as client:
        got = client.get(content_url(provider_id, "(externalId='a')"), headers=APP_WRITE)
        assert got.status_code == 200


def test_the_admin_api_starts_a_compaction(tmp_path: Path) -> None:
    snapshot = tmp_path / "graph.json"
    with run_in_thread(snapshot=snapshot) as emu, httpx.Client(base_url=emu.url, timeout=5) as client:
        provider_id = client.post(PROVIDERS, json=PROVIDER_BODY, headers=ADMIN).json()["id"]
        client.patch(content_url(provider_id, "(externalId='a')"), json=CONTENT_BODY, headers=APP_WRITE)
        started = client.post("/_emulator/persistence/compact")
        assert started.status_code == 202
        journal = emu.state.journal
        assert journal is not None
        journal.wait_compaction(10)
        view = client.get("/_emulator/persistence").json()
        assert (view["compactions"], view["compacting"], view["lastError"]) == (1, False, None)
        assert view["journal"] == []
        assert json.loads(snapshot.read_text(encoding="utf-8"))["journalSeq"] == 2
    with run_in_thread() as emu, httpx.Client(base_url=emu.url, timeout=5) as client:
        assert client.post("/_emulator/persistence/compact").status_code == 409
        assert client.get("/_emulator/persistence").json() == {"snapshot": None, "journal": None}
