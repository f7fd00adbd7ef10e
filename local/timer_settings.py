"""The settings the app's timer triggers name as ``%SETTING%``, for every local stack.

The Functions host resolves a trigger's ``%SETTING%`` when it indexes the app and refuses to index it
when the setting is missing, so each stack (``local/stack.py``, the fault harness, the test stacks)
sets them as Azure's app settings do (``infra/main.bicep``). The default is owned by
``shared.settings``.
"""

from __future__ import annotations

from shared.settings import Settings

DEFAULT_RECONCILE_SCHEDULE = str(Settings.model_fields["reconcile_schedule"].default)
