"""Standard Webhooks verification (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``).

The HMAC and its constant-time comparison come from the ``standardwebhooks`` reference library; this
module only sorts its failures into the three documented problems (missing, expired, invalid), so an
LMS operator can tell a clock skew from a wrong secret.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook, WebhookVerificationError

from shared.problems import SIGNATURE_EXPIRED, SIGNATURE_INVALID, SIGNATURE_MISSING, SOURCE_MISCONFIGURED, Problem

# The reference library fixes the tolerance at five minutes; the spec recommends the same.
TOLERANCE_SECONDS = 5 * 60
HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


@dataclass(frozen=True)
class VerifiedDelivery:
    webhook_id: str
    timestamp: int


def verify(body: bytes, headers: Mapping[str, str], secret: str | None) -> VerifiedDelivery:
    """Check a delivery against the source's ``whsec_`` secret (or several, space-separated, while rotating)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    missing = [h for h in HEADERS if not lowered.get(h, "").strip()]
    if missing:
        raise Problem(SIGNATURE_MISSING, f"missing header(s): {', '.join(missing)}")
    if not secret:
        raise Problem(SOURCE_MISCONFIGURED, "the source has no webhook secret configured")
    raw_ts = lowered["webhook-timestamp"].strip()
    if not re.fullmatch(r"[0-9]{1,12}", raw_ts):
        raise Problem(SIGNATURE_INVALID, "webhook-timestamp must be integer Unix seconds")
    timestamp = int(raw_ts)
    current = time.time()
    if abs(current - timestamp) > TOLERANCE_SECONDS:
        raise Problem(
            SIGNATURE_EXPIRED,
            f"webhook-timestamp is {int(current - timestamp)} s from the receiver's clock; "
            f"the tolerance is {TOLERANCE_SECONDS} s (replayed or skewed delivery)",
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Problem(SIGNATURE_INVALID, "the body is not UTF-8, so it cannot carry a valid signature") from None
    signatures = " ".join(_v1_signatures(lowered["webhook-signature"]))
    if not signatures:
        raise Problem(SIGNATURE_INVALID, "webhook-signature holds no 'v1,<base64>' signature")
    checked = {"webhook-id": lowered["webhook-id"], "webhook-timestamp": raw_ts, "webhook-signature": signatures}
    for candidate in secret.split():
        try:
            Webhook(candidate).verify(text, checked, json_parse=False)
        except (WebhookVerificationError, EmptyWebhookSecretError, binascii.Error, ValueError):
            continue  # a wrong, empty or malformed candidate: try the next rotated secret
        return VerifiedDelivery(webhook_id=lowered["webhook-id"], timestamp=timestamp)
    raise Problem(SIGNATURE_INVALID, "no signature matches the source's secret")


def _v1_signatures(header: str) -> list[str]:
    """The well-formed ``v1,<base64>`` entries. The library stops at the first entry it cannot decode,
    so a sender's malformed (or future-version) entry must not hide a valid one after it."""
    found = []
    for entry in header.split():
        version, _, value = entry.partition(",")
        if version != "v1" or not value:
            continue
        try:
            base64.b64decode(value, validate=True)
        except binascii.Error:
            continue
        found.append(entry)
    return found


def sign(body: bytes, secret: str, *, webhook_id: str, timestamp: int) -> dict[str, str]:
    """Headers a Standard Webhooks sender would add: used by the demo sender and the tests."""
    from datetime import UTC, datetime

    signature = Webhook(secret).sign(webhook_id, datetime.fromtimestamp(timestamp, tz=UTC), body.decode("utf-8"))
    return {"webhook-id": webhook_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}
