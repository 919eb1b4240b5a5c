"""Imports follow the arrow data -> features -> routers -> scenarios -> metrics / report."""

from __future__ import annotations

import ast
import doctest
from pathlib import Path

import pytest

import vlroute.objectives

SRC = Path(__file__).resolve().parents[1] / "src" / "vlroute"
#: package part -> parts it must never import
FORBIDDEN = {
    "data": ("features", "routers", "scenarios", "metrics", "evaluation", "cli"),
    "costs": ("data", "features", "routers", "scenarios", "metrics", "evaluation", "cli"),
    "features": ("routers", "scenarios", "metrics", "evaluation", "cli"),
    "routers": ("features", "metrics", "evaluation", "cli"),
    "scenarios": ("routers", "features", "metrics", "evaluation", "cli"),
    "objectives": ("data", "features", "routers", "scenarios", "metrics", "evaluation", "cli"),
    "metrics": ("features", "routers", "evaluation", "cli"),
    "evaluation": ("cli", "report"),
    # the report draws from results documents only: it never recomputes a metric
    "report": ("data", "features", "routers", "scenarios", "metrics", "cli"),
    # the gateway sits on top: it may use everything but the CLI and the evaluation
    "serve": ("cli", "evaluation", "report", "collect"),
    # collect, judge and the loop use data, costs, serve and evaluation; never the CLI
    "collect": ("cli", "report"),
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text("utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n.split(".")[1] for n in names if n.startswith("vlroute.") and n.count(".") >= 1}


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_imports_follow_the_arrow(part: str) -> None:
    files = [SRC / f"{part}.py"] if (SRC / f"{part}.py").is_file() else \
        sorted((SRC / part).rglob("*.py"))
    assert files
    for path in files:
        bad = _imports(path) & set(FORBIDDEN[part])
        assert not bad, f"{path.relative_to(SRC)} imports {sorted(bad)}"


def test_objectives_doctests() -> None:
    assert doctest.testmod(vlroute.objectives).failed == 0
