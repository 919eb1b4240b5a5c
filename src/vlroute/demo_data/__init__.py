"""Data that ships inside the package: the DynaMath demo subset (MIT, see its ATTRIBUTION.md)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def demo_set_path() -> Path:
    """Folder of the embedded demo set (the shared jsonl contract)."""
    return Path(str(resources.files("vlroute.demo_data").joinpath("dynamath_mini")))
