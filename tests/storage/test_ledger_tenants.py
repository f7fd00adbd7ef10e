"""Ledger keys carry the tenant (issue 13 point 5): one table may serve many tenants, and a
registration id is unique only within its tenant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from azure.data.tables import TableServiceClient

from shared.ledger import Ledger, LedgerEntry, partition_key
from shared.settings import Settings
from tests.conftest import TENANT_ID

OTHER_TENANT = "11111111-2222-4333-8444-555555555555"


def entry(registration: str, external_id: str, when: datetime) -> LedgerEntry:
    return LedgerEntry(registration, external_id, "upsert", when, when, "worker", "demo", f"e-{when.timestamp()}")


def test_the_same_registration_and_item_in_two_tenants_are_two_rows(settings: Settings) -> None:
    home = Ledger.from_settings(settings)
    other = home.for_tenant(OTHER_TENANT.upper())  # one spelling per tenant, whatever the caller sends
    assert other.tenant_id == OTHER_TENANT
    assert home.for_tenant(None) is home
    assert home.for_tenant(TENANT_ID.upper()) is home
    now = datetime.now(UTC)
    assert home.record(entry("reg-1", "c-1", now))
    # The other tenant's older event is not stale: nothing of that tenant was recorded.
    assert other.claim("reg-1", "c-1", now - timedelta(days=1), "owner-b", 60)
    assert other.record(entry("reg-1", "c-1", now - timedelta(days=1)), "owner-b")
    home_entry, other_entry = home.last_push("reg-1", "c-1"), other.last_push("reg-1", "c-1")
    assert home_entry is not None
    assert other_entry is not None
    assert (home_entry.event_time, other_entry.event_time) == (now, now - timedelta(days=1))
    assert home_entry.registration_id == other_entry.registration_id == "reg-1"

    table = TableServiceClient.from_connection_string(settings.storage_connection_string or "").get_table_client(
        settings.ledger_table_name
    )
    keys = sorted(e["PartitionKey"] for e in table.list_entities())
    assert keys == sorted([f"{TENANT_ID}:reg-1", f"{OTHER_TENANT}:reg-1"])
    assert partition_key(OTHER_TENANT.upper(), "reg-1") == f"{OTHER_TENANT}:reg-1"


def test_disabling_a_registration_is_per_tenant(settings: Settings) -> None:
    home = Ledger.from_settings(settings)
    other = home.for_tenant(OTHER_TENANT)
    home.set_registration_enabled("reg-1", False)
    assert not home.registration_enabled("reg-1", fresh=True)
    assert other.registration_enabled("reg-1", fresh=True)


def test_the_registering_app_is_recorded_per_tenant(settings: Settings) -> None:
    home = Ledger.from_settings(settings)
    home.set_registration_enabled("reg-1", True)  # a state row without a registration record is not listed
    home.record_registration("reg-1", app_id="APP-A", display_name="Contoso LMS", by="cli")
    home.for_tenant(OTHER_TENANT).record_registration("reg-2", app_id="app-b", display_name="Other", by="cli")
    [mine] = home.registrations()
    assert (mine["registrationId"], mine["appId"], mine["displayName"], mine["registeredBy"]) == (
        "reg-1",
        "app-a",
        "Contoso LMS",
        "cli",
    )
    assert home.registration_enabled("reg-1", fresh=True)  # recording keeps the enabled state
    [theirs] = home.for_tenant(OTHER_TENANT).registrations()
    assert theirs["registrationId"] == "reg-2"


def test_rows_from_before_tenant_keys_are_adopted_once(settings: Settings) -> None:
    """An upgrade keeps what the ledger knew: a disabled registration stays disabled, an item's newest
    event still wins over an older one, and the circuit's own row is left alone."""
    from shared.ledger import REGISTRATION_ROW, content_row_key

    table = TableServiceClient.from_connection_string(settings.storage_connection_string or "").get_table_client(
        settings.ledger_table_name
    )
    table.create_table()
    now = datetime.now(UTC)
    legacy = entry("reg-old", "c-old", now).to_entity(TENANT_ID)
    legacy.update(PartitionKey="reg-old")
    del legacy["tenantId"], legacy["registrationId"]
    table.create_entity(legacy)
    table.create_entity({"PartitionKey": "reg-old", "RowKey": REGISTRATION_ROW, "enabled": False})
    table.create_entity({"PartitionKey": "circuit", "RowKey": "graph", "state": "closed"})

    ledger = Ledger.from_settings(settings)
    assert ledger.registration_enabled("reg-old", fresh=True)  # before: the old rows are invisible
    assert ledger.adopt_legacy_rows() == 2
    assert not ledger.registration_enabled("reg-old", fresh=True)
    known = ledger.last_push("reg-old", "c-old")
    assert known is not None
    assert known.event_time == now
    assert not ledger.claim("reg-old", "c-old", now - timedelta(hours=1), "late", 60)  # older: stale
    keys = {(e["PartitionKey"], e["RowKey"]) for e in table.list_entities()}
    assert ("reg-old", content_row_key("c-old")) not in keys
    assert ("circuit", "graph") in keys
    assert ledger.adopt_legacy_rows() == 0  # the marker: once per table
