"""Shared-prefix scoring of the Qwen3-Reranker HF teacher: forwarded tokens and time, prefix cache on vs off.

A query's candidate prompts share the frame, the instruction and the query; with ``prefix_cache`` on
(:class:`hf_distill.teachers.models.Qwen3RerankerTeacher`) each query's prefix runs once per batch and only the
remainders run per candidate. This script scores the same StackOverflow-like pairs both ways, batch by batch side by
side (same batches, same order, alternating so that a busy machine slows both alike), and prints:

* forwarded tokens, counted from the model input tensors (:meth:`hf_distill.prompts.RerankerBatch.token_counts`):
  ``real`` (prefixes + remainders with the cache, full prompts without) and ``padded`` (tensor sizes);
* ms per pair of :meth:`~Qwen3RerankerTeacher.run_batch` (the model half; the runner prepares the next batch on a
  thread meanwhile) and of :meth:`~Qwen3RerankerTeacher.prepare_batch`;
* the max ``|score difference|`` between the two.

Also the plain path on the length-sorted batches it gets from the runner without ``batches_by_query`` (less
padding than query batches), so the saving is not measured against a straw man.

Model: a tiny random Qwen3 (hidden 64, 2 layers by default) with a Qwen2Tokenizer (byte-level BPE, trained offline by
``tests/offline_hub.py``), fp32 on CPU, no Hub access. At this size time per pair is mostly fixed per-op overhead
and attention, so ms/pair understates the saving; the ratio of real tokens is what an 8B teacher's compute
follows (its forward is ~2 x 7e9 FLOPs per token).

Data: ``--num_queries`` queries of ~16 tokens, each with ``--num_candidates`` documents of 10-40 tokens, batched
as the runner batches a ``batches_by_query`` teacher: a query's candidates together, longest first, at most
``--max_tokens_per_batch`` padded prompt tokens per batch.

Usage::

    python benchmarks/prefix_scoring.py                      # 200 queries x 30 candidates, ~1.5 min on 2 cores
    python benchmarks/prefix_scoring.py --hidden_size 128 --num_layers 4 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from hf_distill.teachers.models import Qwen3RerankerTeacher  # noqa: E402

from offline_hub import build_tiny_qwen2_tokenizer  # noqa: E402
from tiny_models import _WORDS, tiny_qwen3_config  # noqa: E402

# Words of a StackOverflow-like title/body beyond the tokenizer's own corpus (split into several tokens).
SO_WORDS = (
    _WORDS
    + (
        "python java regex string array how why error exception null pointer install package version git branch merge "
        "commit class function return value loop dictionary json parse http request server client thread lock"
    ).split()
)


def build_model(save_dir: Path, hidden: int, layers: int, seed: int = 0) -> str:
    """Save a tiny random ``Qwen3ForCausalLM`` with the Qwen2Tokenizer under ``save_dir``; returns the path."""
    from transformers import Qwen3ForCausalLM

    tokenizer = build_tiny_qwen2_tokenizer()
    tokenizer.save_pretrained(save_dir)
    config = tiny_qwen3_config(
        tokenizer,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=hidden // 4,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    Qwen3ForCausalLM(config).eval().save_pretrained(save_dir)
    return str(save_dir)


def text_of_tokens(tokenizer, rng: random.Random, num_tokens: int) -> str:
    """Random words, as many as make ``num_tokens`` tokens (or one more when the last word is several tokens)."""
    words: list[str] = []
    while len(tokenizer.encode(" ".join(words), add_special_tokens=False)) < num_tokens:
        words.append(rng.choice(SO_WORDS))
    return " ".join(words)


def make_pairs(
    tokenizer, num_queries: int, num_candidates: int, seed: int = 0
) -> tuple[list[tuple[str, str]], list[int]]:
    """StackOverflow-like ``(query, passage)`` pairs and each pair's query id: ~16-token queries, 10-40-token docs."""
    rng = random.Random(seed)
    pairs, query_ids = [], []
    for q in range(num_queries):
        query = text_of_tokens(tokenizer, rng, rng.randint(12, 20))
        for _ in range(num_candidates):
            pairs.append((query, text_of_tokens(tokenizer, rng, rng.randint(10, 40))))
            query_ids.append(q)
    return pairs, query_ids


def cut(order: list[int], lengths: list[int], budget: int) -> list[list[int]]:
    """Greedy batches of ``order`` with ``len(batch) * longest <= budget``, as the runner cuts them."""
    batches, start = [], 0
    while start < len(order):
        longest, end = lengths[order[start]], start + 1
        while end < len(order) and (end - start + 1) * max(longest, lengths[order[end]]) <= budget:
            longest, end = max(longest, lengths[order[end]]), end + 1
        batches.append(order[start:end])
        start = end
    return batches


def query_batches(lengths: list[int], query_ids: list[int], budget: int) -> list[list[int]]:
    """The runner's plan for a ``batches_by_query`` teacher: queries by their longest item, then their items longest
    first, cut by the token budget."""
    longest = {}
    for i, q in enumerate(query_ids):
        longest[q] = max(longest.get(q, 0), lengths[i])
    order = sorted(range(len(lengths)), key=lambda i: (-longest[query_ids[i]], query_ids[i], -lengths[i], i))
    return cut(order, lengths, budget)


def length_batches(lengths: list[int], budget: int) -> list[list[int]]:
    """The runner's plan for other teachers: every item longest first, cut by the token budget."""
    return cut(sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)), lengths, budget)


def score(teacher: Qwen3RerankerTeacher, pairs, batch: list[int], totals: dict[str, float]) -> np.ndarray:
    """Score one batch, adding its prepare/run seconds and token counts to ``totals``."""
    start = time.perf_counter()
    prepared = teacher.prepare_batch([pairs[i] for i in batch])
    middle = time.perf_counter()
    values = teacher.run_batch(prepared)
    end = time.perf_counter()
    totals["prepare_s"] += middle - start
    totals["run_s"] += end - middle
    for key, count in prepared.token_counts().items():
        totals[key] += count
    totals["forwards"] += (prepared.plain is not None) + 2 * (prepared.prefix is not None)
    return values[:, 0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num_queries", type=int, default=200)
    parser.add_argument("--num_candidates", type=int, default=30)
    parser.add_argument("--hidden_size", type=int, default=64)
    parser.add_argument("--num_layers", type=int, default=2)
    parser.add_argument("--max_tokens_per_batch", type=int, default=16384, help="the runner's default budget")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output_json", default=None, help="also write the numbers to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        path = build_model(Path(tmp) / "tiny-qwen3-reranker", args.hidden_size, args.num_layers)
        teachers = {
            "prefix_cache=True": Qwen3RerankerTeacher(path, device="cpu"),
            "prefix_cache=False": Qwen3RerankerTeacher(path, device="cpu", prefix_cache=False),
        }
        on, off = teachers.values()
        pairs, query_ids = make_pairs(on.tokenizer, args.num_queries, args.num_candidates)
        lengths = on.lengths(pairs)
        prompt_frame = len(on.prompt.prefix_ids) + len(on.prompt.suffix_ids)
        print(
            f"{len(pairs)} pairs ({args.num_queries} queries x {args.num_candidates}), prompt {np.mean(lengths):.1f} "
            f"tokens on average (frame {prompt_frame}, min {min(lengths)}, max {max(lengths)}); tiny Qwen3 hidden "
            f"{args.hidden_size} x {args.num_layers} layers, fp32 CPU, {args.threads} thread(s)"
        )
        batches = query_batches(lengths, query_ids, args.max_tokens_per_batch)
        for teacher in teachers.values():  # load the weights and warm up outside the timings
            teacher.score_batch([pairs[i] for i in batches[0]])

        zero = {"prepare_s": 0.0, "run_s": 0.0, "real": 0, "padded": 0, "forwards": 0}
        totals = {name: dict(zero) for name in teachers}
        scores = {name: np.zeros(len(pairs), dtype=np.float32) for name in teachers}
        for batch in batches:  # side by side: the same batch with each teacher in turn
            for name, teacher in teachers.items():
                scores[name][batch] = score(teacher, pairs, batch, totals[name])
        sorted_name = "prefix_cache=False, length-sorted batches"
        totals[sorted_name] = dict(zero)
        scores[sorted_name] = np.zeros(len(pairs), dtype=np.float32)
        sorted_batches = length_batches(lengths, args.max_tokens_per_batch)
        for batch in sorted_batches:
            scores[sorted_name][batch] = score(off, pairs, batch, totals[sorted_name])

    full = sum(lengths)
    print(f"query batches: {len(batches)}; length-sorted batches: {len(sorted_batches)}; full prompts: {full} tokens")
    header = ("real tok", "% full", "padded tok", "fwd", "run ms/pair", "prep ms/pair")
    print(f"{'':44s} " + " ".join(f"{title:>{width}s}" for title, width in zip(header, (10, 7, 11, 5, 12, 13))))
    for name, t in totals.items():
        print(
            f"{name:44s} {t['real']:10d} {100 * t['real'] / full:6.1f}% {t['padded']:11d} {t['forwards']:5d} "
            f"{1e3 * t['run_s'] / len(pairs):12.3f} {1e3 * t['prepare_s'] / len(pairs):13.3f}"
        )
    base = scores["prefix_cache=False"]
    diff = float(np.abs(scores["prefix_cache=True"] - base).max())
    diff_sorted = float(np.abs(scores[sorted_name] - base).max())
    speedup = totals["prefix_cache=False"]["run_s"] / totals["prefix_cache=True"]["run_s"]
    print(f"max |score(prefix on) - score(prefix off)| = {diff:.3g} (score std {np.std(base):.3g})")
    print(f"max |score(off, query batches) - score(off, length-sorted)| = {diff_sorted:.3g}")
    print(f"run time, same batches: prefix off / prefix on = {speedup:.2f}x")
    if args.output_json:
        result = {"args": vars(args), "pairs": len(pairs), "full_prompt_tokens": full, "max_abs_diff": diff}
        result["totals"] = totals
        Path(args.output_json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
