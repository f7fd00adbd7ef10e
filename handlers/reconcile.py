"""Timer: reconcile each source's registration with its catalog blob (``shared.scheduled_reconcile``),
on ``%RECONCILE_SCHEDULE%``. Off by default: it does nothing until ``RECONCILE_CATALOGS`` names a catalog.

The host resolves ``%RECONCILE_SCHEDULE%`` from the app settings (the Bicep and
``local.settings.sample.json`` set it). A local settings file from before the setting existed lacks
it, so the code's default is put in the process environment for hosts that resolve from it (the dev
host); the default itself is owned by ``shared.settings``.
"""

from __future__ import annotations

import logging
import os

import azure.functions as func
from azure.storage.blob import BlobServiceClient

from shared import scheduled_reconcile, storage
from shared.bootstrap import graph_client, ledger
from shared.settings import Settings, get_settings

bp = func.Blueprint()
logger = logging.getLogger(__name__)

SCHEDULE_SETTING = "RECONCILE_SCHEDULE"
os.environ.setdefault(SCHEDULE_SETTING, str(Settings.model_fields["reconcile_schedule"].default))


@bp.timer_trigger(schedule=f"%{SCHEDULE_SETTING}%", arg_name="timer", run_on_startup=False, use_monitor=True)
async def reconcile_catalogs(timer: func.TimerRequest) -> None:
    settings = get_settings()
    if not settings.reconcile_catalogs:
        logger.info("reconcile timer off: RECONCILE_CATALOGS is empty (past_due=%s)", timer.past_due)
        return
    blobs = storage.open_client(BlobServiceClient, settings.storage("blob"))
    with blobs:
        runs = await scheduled_reconcile.run(settings, graph_client(), ledger(), blobs)
    logger.info("reconcile timer: %d catalog(s) reconciled (past_due=%s)", len(runs), timer.past_due)
