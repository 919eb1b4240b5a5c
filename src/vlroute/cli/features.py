"""``vlroute features``: encode every sample of a bench and store the arrays beside it."""

from __future__ import annotations

from pathlib import Path

import click
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from vlroute.cli._ui import console, err_console
from vlroute.data import load_bench
from vlroute.features.registry import NAMES, make_encoder
from vlroute.features.store import compute_features


@click.command("features")
@click.argument("directory", type=click.Path(exists=True, path_type=Path))
@click.option("--text", "text", default="minilm", show_default=True,
              help="Text encoder ('none' to skip).")
@click.option("--image", "image", default="efficientnet-lite0", show_default=True,
              help="Image encoder ('none' to skip).")
@click.option("--extra", "extra", multiple=True,
              help=f"More encoders to store (e.g. image-stats). Known: {', '.join(NAMES)}.")
@click.option("--cache", type=click.Path(path_type=Path), default=None,
              help="Embedding cache folder, keyed by encoder id + content hash.")
def features(directory: Path, text: str, image: str, extra: tuple[str, ...],
             cache: Path | None) -> None:
    """Encode every sample of the bench in DIRECTORY into DIRECTORY/features/<encoder>.npy."""
    bench = load_bench(directory)
    names = [n for n in (text, image, *extra) if n and n != "none"]
    encoders = {name: make_encoder(name) for name in dict.fromkeys(names)}
    progress = Progress(TextColumn("{task.description}"), BarColumn(),
                        TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                        console=err_console, transient=True)
    with progress:
        tasks = {name: progress.add_task(f"features: {name}", total=len(bench.samples))
                 for name in encoders}

        def step(name: str, done: int, total: int) -> None:
            progress.update(tasks[name], completed=done, total=total)

        compute_features(bench, encoders, cache_dir=cache, progress=step)
    console.print(f"Stored {', '.join(encoders)} features for {len(bench.samples)} samples in "
                  f"{directory / 'features'}.")
