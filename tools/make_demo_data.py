"""Rebuild the embedded demo set (src/vlroute/demo_data/dynamath_mini) from the shared DynaMath.

Run by hand from the repository root: ``python tools/make_demo_data.py [SHARED_DATA_DIR]``.
Takes every third seed question (Q1, Q4, Q7, ...) with all 10 variants, so the subset keeps
DynaMath's spread of subjects and levels; files are copied unchanged.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

OUT = Path("src/vlroute/demo_data/dynamath_mini")
EVERY = 3
MAX_GROUPS = 150


def main() -> None:
    src = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data") / "dynamath"
    seeds = sorted({json.loads(line)["group"] for line in (src / "samples.jsonl").open()},
                   key=lambda g: int(g[1:]))
    keep = set(seeds[::EVERY][:MAX_GROUPS])
    if OUT.exists():
        shutil.rmtree(OUT)
    (OUT / "images").mkdir(parents=True)
    ids = set()
    with (OUT / "samples.jsonl").open("w") as out:
        for line in (src / "samples.jsonl").open():
            sample = json.loads(line)
            if sample["group"] in keep:
                ids.add(sample["sample_id"])
                out.write(line)
                for image in sample["images"]:
                    shutil.copy2(src / image, OUT / image)
    with (OUT / "outcomes.jsonl").open("w") as out:
        out.writelines(line for line in (src / "outcomes.jsonl").open()
                       if json.loads(line)["sample_id"] in ids)
    shutil.copy2(src / "models.jsonl", OUT / "models.jsonl")
    info = json.loads((src / "set.json").read_text())
    info["name"] = "dynamath_mini"
    info["notes"] = (f"Embedded demo subset of DynaMath: every {EVERY}rd seed question "
                     f"({len(keep)} seeds x 10 variants). " + info["notes"])
    (OUT / "set.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"{len(keep)} groups, {len(ids)} samples written to {OUT}")


if __name__ == "__main__":
    main()
