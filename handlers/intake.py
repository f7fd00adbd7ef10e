"""POST /api/webhooks/{source}: signed LMS webhooks in, 202 with queued message ids out (a redelivery:
``"duplicate": true``); every accepted delivery is archived, best-effort."""

from __future__ import annotations

import json

import azure.functions as func

from shared import intake
from shared.bootstrap import command_queue, delivery_dedupe, event_archive
from shared.settings import get_settings

bp = func.Blueprint()


@bp.route(route="webhooks/{source}", methods=["POST", "OPTIONS"], auth_level=func.AuthLevel.FUNCTION)
def receive_webhook(req: func.HttpRequest) -> func.HttpResponse:
    request = intake.make_request(
        req.route_params.get("source", ""), dict(req.headers), req.get_body(), dict(req.params)
    )
    if req.method == "OPTIONS":  # the CloudEvents webhook abuse-protection handshake
        result = intake.preflight(request, get_settings())
    else:
        result = intake.receive(request, get_settings(), command_queue, dedupe=delivery_dedupe, archive=event_archive)
    return func.HttpResponse(
        json.dumps(result.body),
        status_code=result.status,
        headers=result.headers,
        mimetype=result.content_type,
        charset="utf-8",
    )
