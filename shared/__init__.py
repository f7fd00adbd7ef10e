"""Viva Learning Sync as a plain library: models, sources, intake, worker, Graph client, storage ports.

Nothing below imports ``azure.functions``; the handlers pass plain values in.
"""
