"""MiniLM's int8 text graph, three ways, against its fp32 graph on real DynaMath questions. Run
by hand (needs ``pip install onnx-ir`` for onnxruntime's weight-only quantiser):

    python bench/text_int8.py BUNDLE [--bench /tmp/vlroute-benches/dynamath] [--texts 300] \
        [--out bench/results]

``BUNDLE`` is a bundle exported with ``vlroute export onnx BUNDLE --quantize int8``. The
variants: ``dynamic`` (the exported ``text_encoder.int8.onnx``: int8 MatMul weights per
channel, activations quantised at run time over the whole batch), and weight-only int8
(``MatMulNBits``, 8 bits, blocks of 32, symmetric) computing in fp32 (accuracy level 0) or
in int8 with activations quantised per block (accuracy level 4). For each: the largest and
the mean difference from fp32 over ``--texts`` test questions, each encoded alone; how far a
question's features move when it is encoded in a batch of 16 instead of alone; and the p50
milliseconds on one thread for a short text (5 tokens), one test question, and 16 test
questions. Prints a table, writes ``text_int8.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

# bench/onnx.py would shadow the onnx package for a script run from this folder
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def p50_ms(run: Callable[[], Any], repeats: int = 30) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    return round(statistics.median(times), 2)


def weight_only(source: Path, target: Path, accuracy_level: int) -> None:
    import logging

    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.ERROR)
    quantizer = MatMulNBitsQuantizer(onnx.load(str(source)), bits=8, block_size=32,
                                     is_symmetric=True, accuracy_level=accuracy_level or None)
    quantizer.process()
    onnx.save(quantizer.model.model if hasattr(quantizer.model, "model") else quantizer.model,
              str(target))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--bench", type=Path, default=Path("/tmp/vlroute-benches/dynamath"))
    parser.add_argument("--texts", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    import tokenizers

    from vlroute.data import load_bench
    from vlroute.features.onnx import onnx_session

    bench = load_bench(args.bench)
    samples = bench.samples
    texts = [str(q) for q in samples["question"][samples["split"] == "test"]][:args.texts]
    manifest = json.loads((args.bundle / "onnx.json").read_text())["encoders"]["text"]
    tok = tokenizers.Tokenizer.from_file(str(args.bundle / manifest["tokenizer"]))
    tok.enable_truncation(int(manifest["max_length"]))
    tok.enable_padding()

    def feed(batch: list[str]) -> dict[str, np.ndarray]:
        encoded = tok.encode_batch(batch)
        return {"input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64)}

    work = Path(tempfile.mkdtemp(prefix="vlroute-text-int8-"))
    fp32 = args.bundle / manifest["files"]["fp32"]
    graphs = {"fp32": fp32, "dynamic": args.bundle / manifest["files"]["int8"]}
    for level in (0, 4):
        graphs[f"weight-only, accuracy level {level}"] = work / f"nbits8-{level}.onnx"
        weight_only(fp32, graphs[f"weight-only, accuracy level {level}"], level)
    reference = None
    rows = []
    for name, path in graphs.items():
        session = onnx_session(path)
        alone = np.vstack([session.run(None, feed([t]))[0] for t in texts])
        if reference is None:
            reference = alone
        batched = session.run(None, feed(texts[:16]))[0]
        rows.append({
            "graph": name, "mb": round(path.stat().st_size / 1e6, 1),
            "max_abs_diff": float(np.abs(alone - reference).max()),
            "mean_abs_diff": float(np.abs(alone - reference).mean()),
            "batch_vs_alone": float(np.abs(batched - alone[:16]).max()),
            "ms_short": p50_ms(lambda s=session: s.run(None, feed(["What is in this image?"]))),
            "ms_one_question": p50_ms(lambda s=session: s.run(None, feed(texts[:1]))),
            "ms_16_questions": p50_ms(lambda s=session: s.run(None, feed(texts[:16])))})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "text_int8.json").write_text(json.dumps(
        {"bundle": str(args.bundle), "bench": str(args.bench), "texts": len(texts),
         "threads": 1, "rows": rows}, indent=1) + "\n")
    print("| graph | MB | max diff | mean diff | batch of 16 vs alone | ms short | "
          "ms one question | ms 16 questions |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['graph']} | {r['mb']} | {r['max_abs_diff']:.4f} | "
              f"{r['mean_abs_diff']:.5f} | {r['batch_vs_alone']:.1e} | {r['ms_short']} | "
              f"{r['ms_one_question']} | {r['ms_16_questions']} |")


if __name__ == "__main__":
    main()
