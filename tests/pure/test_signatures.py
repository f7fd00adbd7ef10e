import time

import pytest

from shared import signatures
from shared.problems import Problem
from tests.conftest import SECRET
from tests.webhooks import signed

OTHER = "whsec_b3RoZXItc2VjcmV0LWZvci10ZXN0cy0xMjM0NTY3OA=="


def test_valid_signature_is_accepted() -> None:
    body, headers = signed(b'{"a":1}', SECRET)
    delivery = signatures.verify(body, headers, SECRET)
    assert delivery.webhook_id == headers["webhook-id"]


def test_header_names_are_case_insensitive() -> None:
    body, headers = signed(b"{}", SECRET)
    upper = {k.upper(): v for k, v in headers.items()}
    assert signatures.verify(body, upper, SECRET).timestamp == int(headers["webhook-timestamp"])


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header(missing: str) -> None:
    body, headers = signed(b"{}", SECRET)
    del headers[missing]
    with pytest.raises(Problem) as info:
        signatures.verify(body, headers, SECRET)
    assert info.value.kind.slug == "signature-missing"
    assert missing in info.value.detail


def test_wrong_secret_is_invalid() -> None:
    body, headers = signed(b"{}", OTHER)
    with pytest.raises(Problem) as info:
        signatures.verify(body, headers, SECRET)
    assert info.value.kind.slug == "signature-invalid"


def test_tampered_body_is_invalid() -> None:
    _, headers = signed(b'{"a":1}', SECRET)
    with pytest.raises(Problem) as info:
        signatures.verify(b'{"a":2}', headers, SECRET)
    assert info.value.kind.slug == "signature-invalid"


@pytest.mark.parametrize("offset", [-301, 301, -3600])
def test_timestamp_outside_tolerance_is_expired(offset: int) -> None:
    body, headers = signed(b"{}", SECRET, timestamp=int(time.time()) + offset)
    with pytest.raises(Problem) as info:
        signatures.verify(body, headers, SECRET)
    assert info.value.kind.slug == "signature-expired"


def test_timestamp_within_tolerance_is_accepted() -> None:
    body, headers = signed(b"{}", SECRET, timestamp=int(time.time()) - 290)
    signatures.verify(body, headers, SECRET)


@pytest.mark.parametrize("value", ["abc", "1.5e9", "-1", ""])
def test_non_integer_timestamp(value: str) -> None:
    body, headers = signed(b"{}", SECRET)
    headers["webhook-timestamp"] = value
    with pytest.raises(Problem) as info:
        signatures.verify(body, headers, SECRET)
    assert info.value.kind.slug in {"signature-invalid", "signature-missing"}


def test_key_rotation_accepts_either_secret() -> None:
    body, headers = signed(b"{}", OTHER)
    assert signatures.verify(body, headers, f"{SECRET} {OTHER}")


def test_several_signatures_in_header_one_valid() -> None:
    body, headers = signed(b"{}", SECRET)
    headers["webhook-signature"] = "v1,AAAA v1a,ZWQyNTUxOQ== garbage " + headers["webhook-signature"]
    assert signatures.verify(body, headers, SECRET)


def test_malformed_signature_header_is_invalid_not_a_crash() -> None:
    body, headers = signed(b"{}", SECRET)
    headers["webhook-signature"] = "v1,@@@notbase64@@@"
    with pytest.raises(Problem) as info:
        signatures.verify(body, headers, SECRET)
    assert info.value.kind.slug == "signature-invalid"


def test_non_utf8_body_is_invalid() -> None:
    _, headers = signed(b"{}", SECRET)
    with pytest.raises(Problem) as info:
        signatures.verify(b"\xff\xfe", headers, SECRET)
    assert info.value.kind.slug == "signature-invalid"


def test_missing_secret_is_a_server_misconfiguration() -> None:
    body, headers = signed(b"{}", SECRET)
    with pytest.raises(Problem) as info:
        signatures.verify(body, headers, None)
    assert info.value.kind.status == 500


@pytest.mark.parametrize("value", ["1" + "0" * 400, "²", "١٢٣"])
def test_absurd_timestamps_are_invalid_not_a_crash(value: str) -> None:
    body, headers = signed(b"{}", SECRET)
    headers["webhook-timestamp"] = value
    with pytest.raises(Problem) as info:
        signatures.verify(body, headers, SECRET)
    assert info.value.kind.slug == "signature-invalid"


def test_an_empty_rotated_secret_does_not_hide_the_valid_one() -> None:
    body, headers = signed(b"{}", SECRET)
    assert signatures.verify(body, headers, f"whsec_ {SECRET}")


@pytest.mark.parametrize("malformed", ["v1,!!!not-base64", "v1,", "v1,a,b", "v2,abc", "garbage"])
def test_a_malformed_entry_does_not_hide_a_valid_one_after_it(malformed: str) -> None:
    body, headers = signed(b'{"a":1}', SECRET)
    headers["webhook-signature"] = f"{malformed} {headers['webhook-signature']}"
    assert signatures.verify(body, headers, SECRET).webhook_id == headers["webhook-id"]


def test_only_malformed_entries_are_invalid() -> None:
    body, headers = signed(b'{"a":1}', SECRET)
    headers["webhook-signature"] = "v1,!!!not-base64 v1,"
    with pytest.raises(Problem) as info:
        signatures.verify(body, headers, SECRET)
    assert info.value.kind.slug == "signature-invalid"
