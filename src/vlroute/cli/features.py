"""``vlroute features``: encode every sample of a bench and store the arrays beside it."""

from __future__ import annotations

from pathlib import Path

import click
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from vlroute.cli._ui import console, err_console, ray_option
from vlroute.data import load_bench
from vlroute.data.bench import Bench
from vlroute.features.base import Encoder
from vlroute.features.registry import NAMES, make_encoder
from vlroute.features.store import compute_features
from vlroute.features.tokens import compute_tokens, make_token_encoder


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
@click.option("--tokens", is_flag=True,
              help="Store token-level features for the end-to-end routers instead (text "
                   "token states, 128 tokens, and the image's 7x7 feature map as 49 tokens, "
                   "float16) in DIRECTORY/features/tokens; --text and --image name the "
                   "towers (minilm, efficientnet-lite0).")
@click.option("--text-states", type=click.Choice(["last", "penultimate"]), default="last",
              show_default=True,
              help="With --tokens: the text tower's output, or its last layer's input (for "
                   "the end-to-end routers' tune_text_layer=true, which fine-tunes that "
                   "layer).")
@ray_option("Encode with a pool of Ray actors per encoder (each loads its model once; on a "
            "cluster the bench must be at the same path on every node)")
def features(directory: Path, text: str, image: str, extra: tuple[str, ...],
             cache: Path | None, tokens: bool, text_states: str,
             ray_address: str | None) -> None:
    """Encode every sample of the bench in DIRECTORY into DIRECTORY/features/<encoder>.npy."""
    bench = load_bench(directory)
    if text_states != "last" and not tokens:
        raise click.BadParameter("--text-states applies to the token cache; add --tokens.",
                                 param_hint="--text-states")
    if tokens:
        if ray_address is not None:
            raise click.BadParameter("--tokens runs here only; leave out --ray.",
                                     param_hint="--ray")
        _tokens(bench, directory, text, image, extra, text_states)
        return
    names = [n for n in (text, image, *extra) if n and n != "none"]
    encoders: dict[str, Encoder]
    if ray_address is not None:
        from vlroute.features.on_ray import RayEncoder

        address = None if ray_address == "local" else ray_address
        encoders = {name: RayEncoder(name, address) for name in dict.fromkeys(names)}
    else:
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


def _tokens(bench: Bench, directory: Path, text: str, image: str,
            extra: tuple[str, ...], text_states: str) -> None:
    """``features --tokens``: the token cache of the end-to-end routers."""
    if extra:
        raise click.BadParameter("--tokens stores the token cache only; run --extra "
                                 "encoders without --tokens.", param_hint="--extra")
    encoder = make_token_encoder(None if text == "none" else text,
                                 None if image == "none" else image, text_states)
    progress = Progress(TextColumn("{task.description}"), BarColumn(),
                        TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                        console=err_console, transient=True)
    with progress:
        task = progress.add_task("tokens", total=len(bench.samples))
        entry = compute_tokens(bench, encoder,
                               progress=lambda done, total: progress.update(
                                   task, completed=done, total=total))
    console.print(f"Stored tokens ({entry['text_len']} text x {entry['text_dim']}, "
                  f"{entry['image_len']} image x {entry['image_dim']}, float16) for "
                  f"{entry['samples']} samples in {directory / 'features' / 'tokens'}.")
