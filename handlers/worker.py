"""Queue trigger: apply each content command to Microsoft Graph."""

from __future__ import annotations

import json
from pathlib import Path

import azure.functions as func

from shared import worker
from shared.bootstrap import worker_ports
from shared.settings import STORAGE_CONNECTION

bp = func.Blueprint()

_HOST_JSON = Path(__file__).resolve().parents[1] / "host.json"
MAX_DEQUEUE_COUNT = int(json.loads(_HOST_JSON.read_text())["extensions"]["queues"].get("maxDequeueCount", 5))


@bp.queue_trigger(arg_name="msg", queue_name="%CONTENT_QUEUE_NAME%", connection=STORAGE_CONNECTION)
async def apply_content_command(msg: func.QueueMessage) -> None:
    info = worker.MessageInfo(
        message_id=msg.id or "", dequeue_count=msg.dequeue_count or 1, max_dequeue_count=MAX_DEQUEUE_COUNT
    )
    await worker.process(msg.get_body(), info, worker_ports())
