"""Trigger code: each blueprint binds a trigger and hands plain values to ``shared``.

Importing the package turns on telemetry export when Application Insights is configured, so both
blueprints log and trace from their first invocation.
"""

from shared import telemetry
from shared.settings import get_settings

telemetry.configure(get_settings())
