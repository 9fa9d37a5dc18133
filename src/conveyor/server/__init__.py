"""The HTTP API server: `create_app(engine)` returns the FastAPI application."""

from .app import create_app

__all__ = ["create_app"]
