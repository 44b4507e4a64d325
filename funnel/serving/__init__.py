"""Serving: the HTTP service (needs the ``serve`` extra: ``pip install -e ".[serve]"``)."""

from funnel.serving.app import create_app, serve

__all__ = ["create_app", "serve"]
