"""The admin functions (admin key): ``POST /api/ops/replay/poison`` moves parked commands back to the
work queue, ``POST /api/ops/replay/archive`` derives the commands of archived deliveries again; both
counted (``shared.replay``).

The route is ``ops/…``, not ``admin/…``: the Functions host reserves routes starting with ``admin``
for its own API and refuses to index a function that claims one.
"""

from __future__ import annotations

import json

import azure.functions as func

from shared import replay
from shared.bootstrap import command_queue, event_archive
from shared.settings import get_settings

bp = func.Blueprint()


def _response(answer: replay.ReplayAnswer) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(answer.body), status_code=answer.status, mimetype=answer.content_type, charset="utf-8"
    )


@bp.route(route="ops/replay/poison", methods=["POST"], auth_level=func.AuthLevel.ADMIN)
def replay_poison(req: func.HttpRequest) -> func.HttpResponse:
    return _response(replay.handle(req.get_body(), command_queue()))


@bp.route(route="ops/replay/archive", methods=["POST"], auth_level=func.AuthLevel.ADMIN)
def replay_archive(req: func.HttpRequest) -> func.HttpResponse:
    return _response(replay.handle_archive(req.get_body(), get_settings(), event_archive, command_queue))
