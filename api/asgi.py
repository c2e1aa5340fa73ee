"""ASGI entry for worker processes (`rekor serve --workers N`): settings from REKOR_* variables."""

from __future__ import annotations

import logging
import os

from litestar import Litestar

from api.app import create_app
from commands.config import Settings


def app_from_env() -> Litestar:
    """Build the app from the environment; uvicorn calls this in each worker process."""
    from cli.serve import configure_logging

    configure_logging()
    if os.environ.get("REKOR_QUIET_ACCESS_LOG") == "1":
        logging.getLogger("rekor.access").setLevel(logging.WARNING)
    return create_app(Settings.from_env())
