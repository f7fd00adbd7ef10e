"""Trigger code: each blueprint binds a trigger and hands plain values to ``shared``."""
