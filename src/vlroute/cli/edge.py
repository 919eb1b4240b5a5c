"""``vlroute export onnx`` (a bundle's encoders as ONNX graphs) and ``vlroute route`` (one
decision from a bundle, on the torch or the onnx runtime)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from vlroute.cli._ui import console

BUNDLE = click.Path(exists=True, file_okay=False, path_type=Path)


@click.group("export")
def export() -> None:
    """Export a serving bundle for other runtimes."""


@export.command("onnx")
@click.argument("bundle", type=BUNDLE)
@click.option("--quantize", type=click.Choice(["int8"]), default=None,
              help="Also write int8 variants (router.onnx_variant: int8 serves them).")
@click.option("--calibration", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="A folder of images to calibrate the int8 image graph on "
              "(up to 100 are used; default: the embedded demo set's).")
def export_onnx_command(bundle: Path, quantize: str | None, calibration: Path | None) -> None:
    """Write BUNDLE's encoders as ONNX into BUNDLE (needs torch), so that the gateway and
    `vlroute route` serve it with runtime: onnx from the [edge] install, without torch; and
    the router as router.onnx where it has a graph (kNN, linear, MLP, IRT, task priors),
    for runtimes without Python."""
    from vlroute.serve.edge import MANIFEST, export_onnx

    manifest = export_onnx(bundle, quantize=quantize, calibration=calibration)
    for kind, entry in manifest["encoders"].items():
        files = ", ".join(f"{v}: {f}" for v, f in entry["files"].items())
        console.print(f"{kind}: {entry['name']} ({entry['encoder_id']}) -> {files}")
    router = manifest["router"]
    graph = (f"its graph -> {router['graph']}" if router.get("graph")
             else f"no graph ({router.get('why')})")
    console.print(f"router {router['name']} predicts with {router['predicts_with']}; "
                  f"{graph}; wrote {bundle / MANIFEST}")


@click.command("route")
@click.argument("bundle", type=BUNDLE)
@click.option("--text", default="", help="The request's text.")
@click.option("--image", "images", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="An image file of the request (repeatable).")
@click.option("--scenario", default="auto", show_default=True,
              help="auto (the bundle's), a preset or an inline spec.")
@click.option("--runtime", type=click.Choice(["auto", "torch", "onnx"]), default="auto",
              show_default=True, help="What computes the features (auto: onnx when the "
              "bundle carries ONNX graphs).")
@click.option("--variant", type=click.Choice(["fp32", "int8"]), default="fp32",
              show_default=True, help="The ONNX graphs to run.")
@click.option("--threads", type=click.IntRange(1, 64), default=1, show_default=True,
              help="onnxruntime intra-op threads per encoder.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the decision and each model's prediction as JSON.")
def route(bundle: Path, text: str, images: tuple[Path, ...],
          scenario: str, runtime: str, variant: str, threads: int, as_json: bool) -> None:
    """Print the model BUNDLE chooses for one request (the gateway's decision)."""
    from PIL import Image, UnidentifiedImageError

    from vlroute.serve.edge import route_once
    from vlroute.serve.requests import Prompt

    if not text and not images:
        raise click.UsageError("give the request: --text and/or --image.")
    for path in images:
        try:
            with Image.open(path) as img:
                img.verify()
        except (OSError, UnidentifiedImageError) as exc:
            raise click.ClickException(f"{path}: not an image that can be read ({exc}).") \
                from None
    prompt = Prompt(text, tuple(p.read_bytes() for p in images))
    out = route_once(bundle, prompt, scenario, {"runtime": runtime, "onnx_variant": variant,
                                                "onnx_threads": threads})
    if as_json:
        click.echo(json.dumps(out))
    else:
        click.echo(out["model"])
