"""``python -m vlsync`` is ``vlsync``."""

from vlsync import main

main()
