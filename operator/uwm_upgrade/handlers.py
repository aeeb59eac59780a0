"""Thin kopf handlers: translate events into calls to the core and adapters."""
