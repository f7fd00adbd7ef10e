"""Small emulator of the LMS REST endpoints the worker's fetch-back calls (issue 10, point 4).

One server, one root per platform (``{url}/canvas``, ``{url}/moodle``, ``{url}/openedx``,
``{url}/thinkific``: what a source's ``apiBaseUrl`` is set to locally), each answering the vendor's
own documented path, authentication and JSON shapes, with the vendor's error forms. Course data are
seeded through an admin API under ``/_lms`` and returned exactly as given. In-process:
``with run_in_thread(secret="s") as lms: lms.url``; CLI: ``python -m local.lms_emulator``.
See README.md beside this file.
"""

from __future__ import annotations

from .app import create_app
from .config import PLATFORMS, LmsConfig
from .server import RunningLms, run_in_thread
from .state import LmsState

__all__ = ["PLATFORMS", "LmsConfig", "LmsState", "RunningLms", "create_app", "run_in_thread"]
