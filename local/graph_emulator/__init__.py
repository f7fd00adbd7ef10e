"""Strict Microsoft Graph emulator for the Viva Learning APIs (learning providers and content).

Used as a product feature (try an LMS integration without a tenant) and as the worker's test
double, so it answers like real Graph: same paths under ``/v1.0`` and ``/beta``, OData key syntax,
schema validation from the CSDL extract, Graph error bodies, token permissions, and injectable
faults. In-process: ``with run_in_thread() as emu: ...``; CLI: ``python -m local.graph_emulator``.
"""

from __future__ import annotations

from .app import create_app
from .context import Modes
from .faults import FaultConfig, FaultMatch, ScriptedFault, TokenBucketConfig
from .server import RunningEmulator, run_in_thread
from .state import EmulatorState

__all__ = [
    "EmulatorState",
    "FaultConfig",
    "FaultMatch",
    "Modes",
    "RunningEmulator",
    "ScriptedFault",
    "TokenBucketConfig",
    "create_app",
    "run_in_thread",
]
