"""Local Functions host: runs a ``func.FunctionApp``'s own HTTP and queue triggers without Core Tools.

Functions are indexed from the app's decorators; HTTP triggers are served with aiohttp under the
host.json route prefix, and queue triggers poll real Azure Storage (Azurite locally) with the
queue extension's host.json semantics. See ``python -m local.devhost --help`` and
:class:`DevHost`.
"""

from .host import DevHost
from .host_config import HostConfig, QueueOptions, load_host_config
from .indexing import HttpFunction, IndexingError, QueueFunction, TimerFunction, index_app, load_app
from .keys import HostKeys
from .settings import load_local_settings
from .triggers import HostRuntime

__all__ = [
    "DevHost",
    "HostConfig",
    "HostKeys",
    "HostRuntime",
    "HttpFunction",
    "IndexingError",
    "QueueFunction",
    "QueueOptions",
    "TimerFunction",
    "index_app",
    "load_app",
    "load_host_config",
    "load_local_settings",
]
