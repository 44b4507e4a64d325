"""The version of funnel, which saved models record."""

__version__ = "0.2.0"
