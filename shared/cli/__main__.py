"""``python -m shared.cli`` is ``vlsync``."""

from shared.cli import main

main()
