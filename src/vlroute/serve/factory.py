"""App factory for ``vlroute serve --workers N`` (each worker process builds its own app)."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI

from vlroute.serve.app import create_app
from vlroute.serve.config import load_config


def app_from_env() -> FastAPI:
    """The gateway for the config named by ``VLROUTE_CONFIG``."""
    return create_app(load_config(Path(os.environ["VLROUTE_CONFIG"])))
