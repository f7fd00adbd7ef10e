"""Housekeeping on a timer: forget webhook deliveries older than the dedupe horizon.

Hourly, at minute 17 (not on the hour, when other schedules pile up). Table storage keeps rows until
they are deleted, and the dedupe table gains a row per accepted delivery; a missed run costs nothing
but space, since expired rows are already ignored when read (``shared.dedupe``).
"""

from __future__ import annotations

import logging

import azure.functions as func

from shared.bootstrap import delivery_dedupe

bp = func.Blueprint()
logger = logging.getLogger(__name__)


@bp.timer_trigger(schedule="0 17 * * * *", arg_name="timer", run_on_startup=False, use_monitor=True)
def purge_deliveries(timer: func.TimerRequest) -> None:
    dedupe = delivery_dedupe()
    if dedupe is None:
        return  # DEDUPE_HORIZON_HOURS=0: dedupe is off, nothing is remembered
    deleted = dedupe.purge()
    logger.info("purged %d webhook deliveries older than %s (past_due=%s)", deleted, dedupe.horizon, timer.past_due)
