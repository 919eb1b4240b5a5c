"""EfficientNet-Lite0 on the CPU: milliseconds per image by memory layout and images per
forward pass, on real DynaMath images. Run by hand:

    python bench/image_encoder.py [--images 32] [--threads 1] [--out bench/results]

Decoding and resizing are timed apart from the forward pass. Also reports the largest
difference between the two layouts' features. Prints a table, writes ``image_encoder.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vlroute.features.image import EfficientNetLite0Encoder, _rgb

IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "dynamath" / "images"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    paths = sorted(IMAGES.iterdir())[:args.images]
    start = time.perf_counter()
    pixels = [np.asarray(_rgb(p).resize((224, 224), Image.Resampling.BILINEAR),
                         dtype=np.float32) for p in paths]
    decode_ms = (time.perf_counter() - start) * 1e3 / len(paths)
    batch = torch.from_numpy(np.stack(pixels) / 127.5 - 1.0).permute(0, 3, 1, 2)
    channels_last = EfficientNetLite0Encoder()._load()
    layouts = {"channels_last": (channels_last, batch),
               "contiguous (NCHW)": (copy.deepcopy(channels_last).to(
                   memory_format=torch.contiguous_format), batch.contiguous())}
    rows, pooled = [], {}
    with torch.inference_mode():
        for layout, (net, x) in layouts.items():
            pooled[layout] = net.extract_features(x[:4]).mean(dim=(2, 3))
            for chunk in (1, 2, 4, 8, 16):
                net.extract_features(x[:chunk])                       # warm-up
                best = float("inf")
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    for i in range(0, len(x), chunk):
                        net.extract_features(x[i:i + chunk])
                    best = min(best, (time.perf_counter() - start) * 1e3 / len(x))
                rows.append({"layout": layout, "images_per_forward": chunk,
                             "forward_ms_per_image": round(best, 2)})
    diff = float((pooled["channels_last"] - pooled["contiguous (NCHW)"]).abs().max())
    print(f"decode + resize: {decode_ms:.2f} ms/image ({len(paths)} images, "
          f"{args.threads} thread(s)); max feature difference between layouts {diff:.2e}")
    print(f"{'layout':<20}{'images/forward':>16}{'forward ms/image':>18}")
    for r in rows:
        print(f"{r['layout']:<20}{r['images_per_forward']:>16}{r['forward_ms_per_image']:>18}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "image_encoder.json").write_text(json.dumps({
        "machine": platform.platform(), "torch": torch.__version__, "threads": args.threads,
        "images": len(paths), "decode_resize_ms_per_image": round(decode_ms, 2),
        "max_feature_diff_between_layouts": diff, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
