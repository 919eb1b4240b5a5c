"""The ONNX routing path measured: accuracy drift, encoder latency and install footprint. Run
by hand (after bench/routers.py has built the DynaMath bench and its MiniLM +
EfficientNet-Lite0 features):

    python bench/onnx.py [--bench /tmp/vlroute-benches/dynamath] \
        [--routers knn,linear,mlp,gbdt,irt] [--venvs /tmp/vlroute-venvs] [--out bench/results]

1. **Drift.** Each router's serving bundle is trained on the bench (``vlroute train R BENCH``,
   its train split, cost_weight tuned on dev); the first is exported (``vlroute export onnx
   --quantize int8``, the int8 image graph calibrated on 100 of the train split's images; the
   graphs depend on the encoders only, so the others get copies). The
   test split's requests (question text, image files) go through the bundle's ONNX encoders,
   fp32 and int8, and their outputs are compared with the bench's stored torch features (max
   |difference| per encoder). Each bundle then decides on the torch features (what ``vlroute
   eval --artifact`` measures), on fp32 and on int8 features (fused as the gateway fuses them:
   each encoder's output rounded to float32, then the bundle's fusion), and the script counts
   agreements; also with one int8 encoder at a time (the other's features torch's), to see
   which one moves the decisions. How far int8 is from the agreement target: each router's
   agreement with the int8 error scaled by s (features torch + s x (int8 - torch), s from 1
   down to 0.01), i.e. how much smaller a quantisation's error would have to be. And what
   the disagreements cost: accuracy and USD per request of the decisions on torch and on
   int8 features, read from the test split's outcomes. Each bundle's ``router.onnx`` (where
   its router has a graph) on the torch features: the largest difference from the bundle's
   numpy predictions, and how many decisions are the same.
2. **Latency.** One request (text + one image) at a time on one thread (torch told so), the
   p50 over ``--latency-samples`` test requests of the routing engine's feature step on each
   runtime (image decode, resize, both encoders, fusion).
3. **Footprint.** Two venvs, made when missing: ``edge`` (``pip install -e .[edge]``) and
   ``torch`` (``pip install torch==2.13.0`` then ``pip install -e .[encoders,serve]``);
   the size of each venv's site-packages, and ``vlroute route BUNDLE --text T --image I`` in
   each from a cold process (wall time and peak RSS, median of 3): the edge venv on the onnx
   runtime, the torch venv on the torch runtime.

Writes ``onnx.json`` and ``onnx.md`` (the tables, also printed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# this file would shadow the onnx package, which the router graphs import
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
ROUTE_TEXT = "What is the period of this function? Answer with a number."
#: factors the int8 features' error is scaled by to see where decisions would agree
ERROR_SCALES = (1.0, 0.5, 0.25, 0.1, 0.05, 0.02, 0.01)


def cli(*args: object) -> None:
    subprocess.run([sys.executable, "-c", "from vlroute.cli import main; main()",
                    *map(str, args)], check=True, stdout=subprocess.DEVNULL)


def train_bundles(bench: Path, routers: list[str], work: Path) -> dict[str, Path]:
    """One exported bundle per router (the ONNX files are the same for all: copied)."""
    from vlroute._io import write_json_atomic
    from vlroute.serve.edge import MANIFEST, export_router_graph, read_manifest

    out = {}
    for name in routers:
        art = work / name
        cli("train", name, bench, "--out", art, "--overwrite")
        out[name] = art
    first = out[routers[0]]
    calibration = work / "calibration"           # the train split's images, never the test's
    calibration.mkdir()
    from vlroute.data import load_bench

    b = load_bench(bench)
    train = set(np.flatnonzero(b.samples["split"].to_numpy() == "train").tolist())
    for idx, rel in zip(b.images["sample_idx"], b.images["path"], strict=True):
        if int(idx) in train:
            (calibration / Path(str(rel)).name).symlink_to(b.root / str(rel))
    cli("export", "onnx", first, "--quantize", "int8", "--calibration", calibration)
    manifest = read_manifest(first)
    assert manifest is not None
    files = {f for e in manifest["encoders"].values() for f in e["sha256"]}
    for name, art in list(out.items())[1:]:
        for f in sorted(files):
            shutil.copyfile(first / f, art / f)
        # each bundle's own router graph in its manifest (the encoders' entries are shared)
        spec = json.loads((art / "router.json").read_text())["feature_spec"]
        router = {"name": name, "predicts_with": "lightgbm" if name == "gbdt" else "numpy",
                  **export_router_graph(art, spec)}
        write_json_atomic(art / MANIFEST, {**manifest, "router": router})
    return out


def onnx_features(art: Path, items: list[Any], variant: str) -> dict[str, np.ndarray]:
    from vlroute.serve.edge import feature_encoders, route_config

    settings = route_config(art, {"runtime": "onnx", "onnx_variant": variant}).router
    encoders, _ = feature_encoders(settings, art)
    return {kind: np.vstack([enc.encode_batch(items[i:i + 32])
                             for i in range(0, len(items), 32)])
            for kind, enc in encoders.items()}


def decide_from(bundle: Any, predictions: np.ndarray) -> np.ndarray:
    return np.asarray(bundle.decide(predictions, bundle.scenario))


def fused(parts: dict[str, np.ndarray], spec: dict[str, Any]) -> np.ndarray:
    """As :meth:`RoutingEngine._encode`: float32-rounded outputs, then the bundle's fusion."""
    from vlroute.features.fusion import fuse_outputs

    return fuse_outputs(parts, spec["fusion"], float(spec["text_weight"]))


def drift(bench_path: Path, bundles: dict[str, Path]) -> dict[str, Any]:
    from vlroute.data import load_bench
    from vlroute.features.store import bench_items, feature_matrix, load_feature_arrays
    from vlroute.routers.bundle import load_bundle
    from vlroute.serve.edge import read_manifest

    bench = load_bench(bench_path)
    test = np.flatnonzero(bench.samples["split"].to_numpy() == "test")
    items = [bench_items(bench)[i] for i in test]
    stored = load_feature_arrays(bench, ["minilm", "efficientnet-lite0"])
    X_torch, spec = feature_matrix(bench, "minilm", "efficientnet-lite0")
    first = next(iter(bundles.values()))
    out: dict[str, Any] = {"n_test": len(test), "features": {}, "routers": {}}
    X = {"torch": X_torch[test]}
    torch_parts = {"text": stored["minilm"][test], "image": stored["efficientnet-lite0"][test]}
    for variant in ("fp32", "int8"):
        start = time.perf_counter()
        parts = onnx_features(first, items, variant)
        if variant == "int8":         # one int8 encoder at a time, the other torch's
            X["text_int8"] = fused({**torch_parts, "text": parts["text"]}, spec)
            X["image_int8"] = fused({**torch_parts, "image": parts["image"]}, spec)
        out["features"][variant] = {
            "max_abs_diff_text": float(np.abs(parts["text"] - stored["minilm"][test]).max()),
            "max_abs_diff_image": float(np.abs(parts["image"]
                                               - stored["efficientnet-lite0"][test]).max()),
            "seconds": round(time.perf_counter() - start, 1)}
        X[variant] = fused(parts, spec)
    error = {k: parts[k] - torch_parts[k] for k in torch_parts}       # parts: int8's
    matrices = bench.matrices(fields=("quality", "cost"))
    assert list(matrices.sample_ids) == list(bench.samples["sample_id"])
    quality, cost, rows = matrices.quality[test], matrices.cost[test], np.arange(len(test))
    for name, art in bundles.items():
        bundle = load_bundle(art, feature_spec=spec)

        def decide(features: np.ndarray, bundle: Any = bundle) -> np.ndarray:
            return np.asarray(bundle.decide(bundle.predictions(features, bundle.scenario),
                                            bundle.scenario))

        choice = {k: decide(v) for k, v in X.items()}
        scaled = {str(s): float((decide(fused({k: torch_parts[k] + s * error[k]
                                               for k in torch_parts}, spec))
                                 == choice["torch"]).mean())
                  for s in ERROR_SCALES}
        columns = np.array([matrices.models.index(m) for m in bundle.models])

        def outcome(chosen: np.ndarray, columns: np.ndarray = columns) -> dict[str, float]:
            picked = columns[chosen]
            return {"accuracy": float(np.nanmean(quality[rows, picked])),
                    "usd_per_request": float(np.nanmean(cost[rows, picked]))}

        graph = read_manifest(art)["router"].get("graph")       # type: ignore[index]
        if graph:           # router.onnx on the torch features: eval's predictions?
            from vlroute.routers.onnx_graph import graph_outputs

            want = bundle.predictions(X["torch"], bundle.scenario)
            got = graph_outputs(art / graph, X["torch"])
            graph_check = {"max_abs_diff": float(np.abs(got - want).max()),
                           "decisions_equal": float((decide_from(bundle, got)
                                                     == choice["torch"]).mean())}
        else:
            graph_check = None
        out["routers"][name] = {
            "scenario": bundle.scenario.spec(), "router_graph": graph_check,
            "fp32_vs_torch": float((choice["fp32"] == choice["torch"]).mean()),
            "int8_vs_fp32": float((choice["int8"] == choice["fp32"]).mean()),
            "int8_vs_torch": float((choice["int8"] == choice["torch"]).mean()),
            "text_int8_only_vs_torch": float((choice["text_int8"] == choice["torch"]).mean()),
            "image_int8_only_vs_torch": float((choice["image_int8"]
                                               == choice["torch"]).mean()),
            "int8_error_scaled_vs_torch": scaled,
            "outcomes": {"torch": outcome(choice["torch"]), "int8": outcome(choice["int8"])}}
    return out


def latency(bench_path: Path, art: Path, n: int) -> dict[str, Any]:
    """p50 ms of the routing engine's feature step, one request at a time, one thread."""
    import torch

    from vlroute.data import load_bench
    from vlroute.features.store import bench_items
    from vlroute.serve.edge import route_config
    from vlroute.serve.requests import Prompt
    from vlroute.serve.routing import RoutingEngine

    torch.set_num_threads(1)
    bench = load_bench(bench_path)
    test = np.flatnonzero(bench.samples["split"].to_numpy() == "test")[:n]
    items = [bench_items(bench)[i] for i in test]
    prompts = [Prompt(it.text, tuple(p.read_bytes() for p in it.images)) for it in items]
    out = {}
    for runtime, variant in (("torch", "fp32"), ("onnx", "fp32"), ("onnx", "int8")):
        engine = RoutingEngine.from_config(route_config(
            art, {"runtime": runtime, "onnx_variant": variant}), art, required=True)
        engine.warm_up()
        times = []
        for prompt in prompts:
            start = time.perf_counter()
            engine.features([prompt])
            times.append((time.perf_counter() - start) * 1e3)
        out[engine.runtime] = {"p50_ms": round(statistics.median(times), 2),
                               "p90_ms": round(float(np.percentile(times, 90)), 2),
                               "stages_p50_ms": stages(engine, items)}
    return out


def stages(engine: Any, items: list[Any]) -> dict[str, float]:
    """p50 ms of each step of the feature step, one request at a time: the image's decode
    and resize (``lite_pixels``), the text encoder, the image encoder (with its decode)."""
    from vlroute.features.image import lite_pixels

    steps = {"image_decode_resize": lambda it: lite_pixels([it]),
             "text_encoder": lambda it: engine.encoders["text"].encode_batch([it]),
             "image_encoder_with_decode": lambda it: engine.encoders["image"].encode_batch([it])}
    out = {}
    for name, step in steps.items():
        times = []
        for item in items:
            start = time.perf_counter()
            step(item)
            times.append((time.perf_counter() - start) * 1e3)
        out[name] = round(statistics.median(times), 2)
    return out


def make_venv(path: Path, steps: list[list[str]]) -> Path:
    python = path / "bin" / "python"
    if not python.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
        for step in steps:
            subprocess.run([str(python), "-m", "pip", "install", "-q", *step], check=True)
    return python


def site_packages(python: Path) -> dict[str, Any]:
    """The installed size of a venv's site-packages (MB), and its five largest entries."""
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; "
                                "print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    sizes = {entry.name: sum(f.stat().st_size for f in entry.rglob("*")
                             if f.is_file() and not f.is_symlink()) if entry.is_dir()
             else entry.stat().st_size for entry in site.iterdir()}
    largest = sorted(sizes.items(), key=lambda kv: -kv[1])[:5]
    return {"site_packages_mb": round(sum(sizes.values()) / 1e6, 1),
            "largest_mb": {k: round(v / 1e6, 1) for k, v in largest}}


def cold_route(python: Path, art: Path, image: Path, runtime: str) -> dict[str, Any]:
    """``vlroute route`` from a cold process: median wall seconds and peak RSS (MB) of 3."""
    runs = []
    for _ in range(3):
        proc = subprocess.run(
            ["/usr/bin/time", "-f", "%e %M", str(python), "-c",
             "from vlroute.cli import main; main()", "route", str(art), "--text", ROUTE_TEXT,
             "--image", str(image), "--runtime", runtime, "--json"],
            capture_output=True, text=True, check=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"})
        wall, rss_kb = proc.stderr.strip().splitlines()[-1].split()
        runs.append((float(wall), int(rss_kb) / 1024, json.loads(proc.stdout)["model"]))
    return {"runtime": runtime, "cold_start_s": statistics.median(r[0] for r in runs),
            "peak_rss_mb": round(statistics.median(r[1] for r in runs), 1),
            "model": runs[0][2]}


LITE_PACKAGES = ["numpy", "pillow", "onnxruntime", "tokenizers"]


def cold_lite(python: Path, art: Path, image: Path) -> dict[str, Any]:
    """``python -m vlroute.serve.lite`` from a cold process: median wall seconds and peak
    RSS (MB) of 3."""
    runs = []
    for _ in range(3):
        proc = subprocess.run(
            ["/usr/bin/time", "-f", "%e %M", str(python), "-m", "vlroute.serve.lite",
             str(art), "--text", ROUTE_TEXT, "--image", str(image), "--json"],
            capture_output=True, text=True, check=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"})
        wall, rss_kb = proc.stderr.strip().splitlines()[-1].split()
        runs.append((float(wall), int(rss_kb) / 1024, json.loads(proc.stdout)["model"]))
    return {"runtime": "onnx, lite", "cold_start_s": statistics.median(r[0] for r in runs),
            "peak_rss_mb": round(statistics.median(r[1] for r in runs), 1),
            "model": runs[0][2]}


def footprint(venvs: Path, art: Path, image: Path) -> dict[str, Any]:
    lite = make_venv(venvs / "lite", [["--no-deps", "-e", str(REPO)], LITE_PACKAGES])
    edge = make_venv(venvs / "edge", [["-e", f"{REPO}[edge]"]])
    torch = make_venv(venvs / "torch", [["torch==2.13.0"], ["-e", f"{REPO}[encoders,serve]"]])
    return {"lite": {"install": "pip install --no-deps -e . && pip install "
                             + " ".join(LITE_PACKAGES), **site_packages(lite),
                     **cold_lite(lite, art, image)},
            "edge": {"install": "pip install -e '.[edge]'",
                     **site_packages(edge),
                     **cold_route(edge, art, image, "onnx")},
            "torch": {"install": "pip install torch==2.13.0 && pip install -e "
                                 "'.[encoders,serve]'",
                      **site_packages(torch),
                      **cold_route(torch, art, image, "torch")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bench", type=Path, default=Path("/tmp/vlroute-benches/dynamath"))
    parser.add_argument("--routers", default="knn,linear,mlp,gbdt,irt")
    parser.add_argument("--latency-samples", type=int, default=100)
    parser.add_argument("--venvs", type=Path, default=Path("/tmp/vlroute-venvs"))
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--footprint-only", action="store_true", help="rerun only the "
                        "install footprints (a kNN bundle exported afresh) into an existing "
                        "onnx.json")
    parser.add_argument("--latency-only", action="store_true", help="rerun only the latency "
                        "part (a kNN bundle exported afresh) into an existing onnx.json")
    parser.add_argument("--tables", action="store_true", help="only print (and write to "
                        "onnx.md) the tables of an existing onnx.json in --out")
    args = parser.parse_args()
    if args.tables:
        write_tables(json.loads((args.out / "onnx.json").read_text()), args.out)
        return
    if args.footprint_only:         # rerun the install footprints into an existing onnx.json
        from vlroute.data import load_bench

        result = json.loads((args.out / "onnx.json").read_text())
        art = Path(tempfile.mkdtemp(prefix="vlroute-onnx-")) / "knn"
        cli("train", "knn", args.bench, "--out", art)
        cli("export", "onnx", art)
        bench = load_bench(args.bench)
        result["footprint"] = footprint(args.venvs, art,
                                        bench.root / str(bench.images["path"].iloc[0]))
        (args.out / "onnx.json").write_text(json.dumps(result, indent=1) + "\n")
        write_tables(result, args.out)
        return
    if args.latency_only:           # rerun the latency part into an existing onnx.json
        result = json.loads((args.out / "onnx.json").read_text())
        art = Path(tempfile.mkdtemp(prefix="vlroute-onnx-")) / "knn"
        cli("train", "knn", args.bench, "--out", art)
        cli("export", "onnx", art, "--quantize", "int8")
        result["latency_one_thread"] = latency(args.bench, art, args.latency_samples)
        (args.out / "onnx.json").write_text(json.dumps(result, indent=1) + "\n")
        write_tables(result, args.out)
        return
    work = Path(tempfile.mkdtemp(prefix="vlroute-onnx-"))
    routers = args.routers.split(",")
    bundles = train_bundles(args.bench, routers, work)
    result: dict[str, Any] = {"bench": str(args.bench), "cores": os.cpu_count()}
    result["drift"] = drift(args.bench, bundles)
    result["latency_one_thread"] = latency(args.bench, bundles[routers[0]],
                                           args.latency_samples)
    from vlroute.data import load_bench

    bench = load_bench(args.bench)
    image = bench.root / str(bench.images["path"].iloc[0])
    result["footprint"] = footprint(args.venvs, bundles[routers[0]], image)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "onnx.json").write_text(json.dumps(result, indent=1) + "\n")
    write_tables(result, args.out)


def write_tables(result: dict[str, Any], out: Path) -> None:
    """Print the tables and write them to ``onnx.md``."""
    d = result["drift"]
    lines = [f"features, {d['n_test']} test requests: " + "; ".join(
        f"{v}: max |diff| text {f['max_abs_diff_text']:.2e}, image "
        f"{f['max_abs_diff_image']:.2e}" for v, f in d["features"].items()), "",
        "| router | scenario | fp32 = torch | int8 = fp32 | int8 = torch | int8 text only "
        "= torch | int8 image only = torch |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {name} | {r['scenario']} | {r['fp32_vs_torch']:.1%} | "
              f"{r['int8_vs_fp32']:.1%} | {r['int8_vs_torch']:.1%} | "
              f"{r.get('text_int8_only_vs_torch', float('nan')):.1%} | "
              f"{r.get('image_int8_only_vs_torch', float('nan')):.1%} |"
              for name, r in d["routers"].items()]
    scaled = [r for r in d["routers"].values() if "int8_error_scaled_vs_torch" in r]
    if scaled:
        scales = list(scaled[0]["int8_error_scaled_vs_torch"])
        lines += ["", "Decisions agreeing with torch's when the int8 error is scaled by s "
                  "(features torch + s x (int8 - torch)), and what the decisions on torch and "
                  "int8 features score on the test split:", "",
                  "| router | " + " | ".join(f"s = {s}" for s in scales)
                  + " | accuracy torch / int8 | USD per 10k requests torch / int8 |",
                  "|---|" + "---|" * (len(scales) + 2)]
        lines += [f"| {name} | " + " | ".join(
                  f"{r['int8_error_scaled_vs_torch'][s]:.1%}" for s in scales)
                  + f" | {r['outcomes']['torch']['accuracy']:.3f} / "
                  f"{r['outcomes']['int8']['accuracy']:.3f} | "
                  f"{r['outcomes']['torch']['usd_per_request'] * 1e4:.2f} / "
                  f"{r['outcomes']['int8']['usd_per_request'] * 1e4:.2f} |"
                  for name, r in d["routers"].items() if "int8_error_scaled_vs_torch" in r]
    graphs = {n: r.get("router_graph") for n, r in d["routers"].items()
              if "router_graph" in r}
    if graphs:
        lines += ["", "router.onnx (the router as a graph) on the 1,000 test requests' torch "
                  "features, against the bundle's numpy predictions: " + "; ".join(
                      f"{n}: max |diff| {g['max_abs_diff']:.1e}, decisions equal "
                      f"{g['decisions_equal']:.1%}" if g else f"{n}: no graph"
                      for n, g in graphs.items())]
    lines += ["", "| runtime | features p50 ms | p90 ms | image decode + resize | text encoder "
              "| image encoder (with decode) |", "|---|---|---|---|---|---|"]
    lines += [f"| {runtime} | {r['p50_ms']} | {r['p90_ms']} | " + " | ".join(
              str(r.get("stages_p50_ms", {}).get(k, "")) for k in
              ("image_decode_resize", "text_encoder", "image_encoder_with_decode")) + " |"
              for runtime, r in result["latency_one_thread"].items()]
    lines += ["", "| install | site-packages MB | largest | cold decision s (`vlroute route`; "
              "lite: `python -m vlroute.serve.lite`) | peak RSS MB |", "|---|---|---|---|---|"]
    lines += [f"| {name} ({r['runtime']}) | {r['site_packages_mb']} | "
              + ", ".join(f"{k} {v}" for k, v in r["largest_mb"].items())
              + f" | {r['cold_start_s']} | {r['peak_rss_mb']} |"
              for name, r in result["footprint"].items()]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    (out / "onnx.md").write_text(f"Written by `python bench/onnx.py` (bench {result['bench']}, "
                                 f"{result['cores']} cores); the numbers are in onnx.json.\n\n"
                                 + text)

if __name__ == "__main__":
    main()
