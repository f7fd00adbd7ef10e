"""Timer: reconcile each source's registration with its catalog blob (``shared.scheduled_reconcile``),
on ``%RECONCILE_SCHEDULE%``. Off by default: it does nothing until ``RECONCILE_CATALOGS`` names a catalog.

The host resolves ``%RECONCILE_SCHEDULE%`` from the app settings when it indexes the functions, before
any of this module runs, so the setting must exist wherever the app runs: the Bicep, the
``local.settings.sample.json`` and every local stack set it (a setting missing there fails indexing,
as it would in Azure).
"""

from __future__ import annotations

import logging

import azure.functions as func
from azure.storage.blob import BlobServiceClient

from shared import scheduled_reconcile, storage
from shared.bootstrap import graph_client, ledger
from shared.ratebudget import RateBudgets
from shared.settings import get_settings

bp = func.Blueprint()
logger = logging.getLogger(__name__)

SCHEDULE_SETTING = "RECONCILE_SCHEDULE"
# The longest wait for the shared write budget inside one call. The timer has no queue to carry a
# longer wait (the worker's GRAPH_MAX_INLINE_RETRY_SECONDS): a push's own deadline still bounds it.
BUDGET_WAIT_SECONDS = 300.0


@bp.timer_trigger(schedule=f"%{SCHEDULE_SETTING}%", arg_name="timer", run_on_startup=False, use_monitor=True)
async def reconcile_catalogs(timer: func.TimerRequest) -> None:
    settings = get_settings()
    if not settings.reconcile_catalogs:
        logger.info("reconcile timer off: RECONCILE_CATALOGS is empty (past_due=%s)", timer.past_due)
        return
    budgets = RateBudgets.from_settings(settings, max_wait_seconds=BUDGET_WAIT_SECONDS)
    blobs = storage.open_client(BlobServiceClient, settings.storage("blob"))
    with blobs:
        runs = await scheduled_reconcile.run(settings, graph_client(), ledger(), blobs, budgets=budgets)
    logger.info("reconcile timer: %d catalog(s) reconciled (past_due=%s)", len(runs), timer.past_due)
