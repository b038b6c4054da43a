"""Peak memory of loading a teacher-scored training file, in memory (v0.1) vs streamed into Arrow (now).

Writes listwise files of ``--sizes`` queries x ``--candidates`` passages (~40 words each), then loads each in a
fresh process and prints the peak RSS above the interpreter's baseline:

* ``in_memory``: ``groups_to_dataset(read_groups(path))``, what ``load_ranking_dataset`` did in v0.1 on every rank;
* ``arrow``: ``load_ranking_dataset(path)``, streamed one group at a time into an Arrow file in a fresh
  ``HF_DATASETS_CACHE`` (first build), then memory-mapped (``arrow (cached)``: what every other rank and every
  later run pays).

Usage: ``python benchmarks/training_data_memory.py --sizes 10000 50000``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORDS = (
    "linux file system process memory network socket kernel user group permission directory list copy move "
    "remove archive compress print display manual page terminal shell script variable command option"
).split()


def write_file(path: Path, num_queries: int, candidates: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for q in range(num_queries):
            passages = [f"{q}-{c} " + " ".join(rng.choices(WORDS, k=40)) for c in range(candidates)]
            row = {
                "query": " ".join(rng.choices(WORDS, k=8)),
                "passages": passages,
                "scores": [rng.gauss(0, 3) for _ in passages],
                "labels": [1] + [0] * (candidates - 1),
            }
            f.write(json.dumps(row) + "\n")


def _child(mode: str, path: str) -> None:
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    import datasets  # noqa: F401  (imported before the baseline would hide its own cost unfairly)

    from hf_distill.data import groups_to_dataset, load_ranking_dataset, read_groups

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if mode == "in_memory":
        dataset = groups_to_dataset(read_groups(path))
    else:
        dataset = load_ranking_dataset(path)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"rows": len(dataset), "peak_mib": (peak - baseline) / 1024, "seconds": seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 50000])
    parser.add_argument("--candidates", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'queries':>8} {'file MiB':>9} {'mode':>15} {'peak RSS MiB':>13} {'seconds':>8}")
        for size in args.sizes:
            path = Path(tmp) / f"train_{size}.jsonl"
            write_file(path, size, args.candidates)
            env = {**os.environ, "HF_DATASETS_CACHE": str(Path(tmp) / f"cache_{size}"), "PYTHONPATH": str(REPO)}
            for mode, label in (("in_memory", "in_memory"), ("arrow", "arrow"), ("arrow", "arrow (cached)")):
                out = subprocess.run(
                    [sys.executable, __file__, "--child", mode, str(path)],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                result = json.loads(out.strip().splitlines()[-1])
                print(
                    f"{size:>8} {path.stat().st_size / 2**20:>9.0f} {label:>15} {result['peak_mib']:>13.0f} "
                    f"{result['seconds']:>8.1f}"
                )


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3])
    else:
        main()
