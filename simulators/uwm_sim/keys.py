"""Typed application keys shared by the app factories and the views (kept apart to avoid import cycles)."""

from __future__ import annotations

from aiohttp import web

from .service import ServerRuntime

RUNTIME = web.AppKey("runtime", ServerRuntime)
