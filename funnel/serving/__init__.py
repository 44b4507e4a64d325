"""Serving: the HTTP service (needs the ``serve`` extra: ``pip install -e ".[serve]"``)."""

from funnel.serving.app import create_app
from funnel.serving.auth import APIKeys
from funnel.serving.server import serve
from funnel.serving.settings import ServiceSettings

__all__ = ["APIKeys", "ServiceSettings", "create_app", "serve"]
