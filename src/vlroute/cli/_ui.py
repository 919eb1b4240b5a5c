"""Terminal helpers of the CLI: progress for long steps and tables."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console(highlight=False)
if not console.is_terminal:  # pipes and CI logs: wide enough for the results tables
    console = Console(highlight=False, width=160)
err_console = Console(stderr=True, highlight=False)


def ray_option(what: str) -> Callable[[Any], Any]:
    """``--ray [ADDRESS]`` (the ``ray_address`` parameter: None without it, "local" for a
    new local instance, else the address), its help starting with ``what``."""
    return click.option(
        "--ray", "ray_address", default=None, is_flag=False, flag_value="local",
        metavar="[ADDRESS]",
        help=f"{what}: on a new local Ray instance (--ray alone, after DIRECTORY) or on the "
             "cluster at ADDRESS (host:port of `ray start --head`, or auto). Needs the [ray] "
             "extra.")


@contextlib.contextmanager
def steps(title: str, total: int, counted: str | None = None
          ) -> Iterator[Callable[[str], None]]:
    """A progress bar of ``total`` named steps on stderr; yields ``note(step_name)``. With
    ``counted``, only the notes that start with it are steps (the others just show)."""
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                        TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                        console=err_console, transient=True)
    with progress:
        task = progress.add_task(title, total=total)
        started = False

        def note(step: str) -> None:
            nonlocal started
            if counted is None or step.startswith(counted):
                if started:
                    progress.advance(task)
                started = True
            progress.update(task, description=f"{title}: {step}")

        yield note
        progress.update(task, completed=total)


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a table cell; missing values as a dash."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    """A rich table with right-aligned numeric columns."""
    out = Table(title=title, title_justify="left")
    for k, name in enumerate(columns):
        out.add_column(name, justify="left" if k == 0 else "right")
    for row in rows:
        out.add_row(*(str(cell) for cell in row))
    return out
