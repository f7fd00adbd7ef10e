"""GET /api/health (anonymous: up, degraded or down) and GET /api/health/details (function key)."""

from __future__ import annotations

import json

import azure.functions as func

from shared import status
from shared.bootstrap import command_queue
from shared.settings import get_settings

bp = func.Blueprint()


def _response(answer: status.HealthAnswer) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(answer.body),
        status_code=answer.status,
        headers={"Cache-Control": "no-store"},
        mimetype="application/json",
        charset="utf-8",
    )


@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    return _response(status.health(command_queue()))


@bp.route(route="health/details", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def health_details(req: func.HttpRequest) -> func.HttpResponse:
    return _response(status.app_details(get_settings(), command_queue()))
