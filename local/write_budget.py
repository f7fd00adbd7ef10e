"""The app settings every local stack sets beyond its own (``make dev``, the stack tests, the fault
harness): the Graph write budget, and the settings the timer triggers name as ``%SETTING%``.

The write budget.

Production keeps the draft's figure (GRAPH_WRITE_RATE_PER_SECOND 1, burst 20, 500 per 10 minutes:
0.8 writes/s, ``shared.ratebudget``). Here the Graph emulator stands in for Graph, and at 0.8/s the
fault suite's 2,000 events alone would take 40 minutes. 1,000 writes/s with a burst of 1,000 sits above
what the emulator is asked to sustain (issue 11's floor: 1,000 PATCH/s; about 370/s measured before
it) and what a 2-core machine's worker pushes, so the budget is never the bottleneck; yet every write
still goes through the shared bucket (table grants, AIMD, the notBefore a 429 or 503 writes), so the
suites exercise the production path. A variable already set in the environment wins (try the
production figure with ``GRAPH_WRITE_RATE_PER_SECOND=1 GRAPH_WRITE_BURST=20 GRAPH_WRITE_BLOCK_LIMIT=500
make dev``); ``GRAPH_WRITE_RATE_PER_SECOND=0`` turns the budget off.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from shared.settings import Settings

LOCAL_WRITE_BUDGET = {
    "GRAPH_WRITE_RATE_PER_SECOND": "1000",
    "GRAPH_WRITE_BURST": "1000",
    "GRAPH_WRITE_BLOCK_LIMIT": "0",  # no block limit: the emulator has none unless a scenario sets one
}


# The Functions host resolves a trigger's %SETTING% when it indexes the app and refuses the function
# when the setting is missing, so every stack sets them as Azure's app settings do (infra/main.bicep);
# the default is owned by shared.settings.
TIMER_SETTINGS = {"RECONCILE_SCHEDULE": str(Settings.model_fields["reconcile_schedule"].default)}
LOCAL_APP_SETTINGS = {**LOCAL_WRITE_BUDGET, **TIMER_SETTINGS}


def local_write_budget(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The write budget above, each setting unless ``environ`` already sets it."""
    return {name: environ.get(name, value) for name, value in LOCAL_WRITE_BUDGET.items()}


def local_app_settings(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Every setting above, each unless ``environ`` already sets it."""
    return {name: environ.get(name, value) for name, value in LOCAL_APP_SETTINGS.items()}
