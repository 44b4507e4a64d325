"""Serving: the HTTP service (needs the ``serve`` extra: ``pip install -e ".[serve]"``)."""

from funnel.serving.app import create_app, serve
from funnel.serving.auth import APIKeys

__all__ = ["APIKeys", "create_app", "serve"]
