"""Mining benchmarks: first-stage speed and memory on a synthetic corpus, and the quickstart's retrieval leg.

**Speed** (default): a synthetic corpus (Zipf-distributed words over a 50k vocabulary, 30-60 words per passage)
and queries (5-8 words of a random passage, which is their positive) are written as JSONL, then, each stage in its
own process so that its peak RSS is its own:

* ``bm25``: read the corpus, build the bm25s index, search ``--top_k`` per query;
* ``dense``: read the corpus, encode it with the first 2 layers of all-MiniLM-L6-v2 (length-sorted token-budget
  batches) straight into a faiss index (exact up to ``--hnsw_threshold`` passages, HNSW beyond), encode the
  queries and search.

::

    python benchmarks/mining.py --num_passages 100000 --num_queries 1000
    python benchmarks/mining.py --num_passages 1000000 --num_queries 10000 --stages bm25   # the issue's size

**Quickstart retrieval leg** (``--quickstart OUT``): the man-page splits as one retrieval task (every passage of
every split in one corpus, ``hf_distill.retrieval.write_retrieval_task``), the train queries mined with
``recipes/mine.py`` (top 15, MiniLM-L6 teacher) in several ways, the first 2 layers of MiniLM distilled on each
with ``recipes/embedding.py`` (1 epoch, the quickstart's flags), and every student evaluated as a retriever over
the whole corpus with ``recipes/evaluate.py --corpus_file`` (in domain and out of domain)::

    python benchmarks/mining.py --quickstart /tmp/quickstart_retrieval
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def write_synthetic_task(folder: Path, num_passages: int, num_queries: int, seed: int = 0) -> tuple[Path, Path]:
    """``corpus.jsonl`` and ``queries.jsonl`` of made-up words with a Zipf law, written in chunks."""
    folder.mkdir(parents=True, exist_ok=True)
    corpus, queries = folder / f"corpus_{num_passages}.jsonl", folder / f"queries_{num_passages}_{num_queries}.jsonl"
    if corpus.exists() and queries.exists():
        return corpus, queries
    rng = np.random.default_rng(seed)
    vocabulary = np.array([f"w{i}" for i in range(50_000)])
    weights = 1.0 / np.arange(1, len(vocabulary) + 1) ** 1.07
    weights /= weights.sum()
    query_sources = set(rng.choice(num_passages, size=num_queries, replace=False).tolist())
    query_rows = []
    with open(corpus, "w", encoding="utf-8") as f:
        for start in range(0, num_passages, 10_000):
            count = min(10_000, num_passages - start)
            lengths = rng.integers(30, 61, size=count)
            words = vocabulary[rng.choice(len(vocabulary), size=int(lengths.sum()), p=weights)]
            offsets = np.concatenate([[0], np.cumsum(lengths)])
            for i in range(count):
                text = words[offsets[i] : offsets[i + 1]]
                f.write(json.dumps({"id": f"d{start + i}", "text": " ".join(text)}) + "\n")
                if start + i in query_sources:
                    picked = rng.choice(text, size=int(rng.integers(5, 9)), replace=False)
                    query_rows.append(
                        {"id": f"q{len(query_rows)}", "query": " ".join(picked), "positive_ids": [f"d{start + i}"]}
                    )
    queries.write_text("".join(json.dumps(row) + "\n" for row in query_rows), encoding="utf-8")
    return corpus, queries


def run_stage(stage: str, corpus_file: str, queries_file: str, top_k: int, hnsw_threshold: int) -> dict:
    """One stage, timed step by step, in this process; returns its timings, peak RSS and retrieval metrics."""
    import torch

    from hf_distill.retrieval import (
        BM25Retriever,
        DenseRetriever,
        read_corpus,
        read_queries,
        relevant_indices,
        retrieval_metrics,
    )

    torch.set_num_threads(os.cpu_count() or 1)
    timings = {}
    start = time.perf_counter()
    corpus = read_corpus(corpus_file)
    queries = read_queries(queries_file, corpus)
    timings["read_s"] = time.perf_counter() - start
    timings["rss_after_read_mib"] = peak_rss_mib()
    texts = [query.text for query in queries]
    start = time.perf_counter()
    if stage == "bm25":
        retriever = BM25Retriever(corpus.texts)
        timings["index_s"] = time.perf_counter() - start
    else:
        from hf_distill.evaluation import load_base_scorer
        from hf_distill.model_loading import quiet_transformers_warnings

        from common import minilm_path

        with quiet_transformers_warnings():
            encoder = load_base_scorer("embedding", minilm_path(), num_hidden_layers=2, max_length=128)
        retriever = DenseRetriever(encoder, corpus.texts, max_tokens_per_batch=16384, hnsw_threshold=hnsw_threshold)
        timings["encode_and_index_s"] = time.perf_counter() - start
    start = time.perf_counter()
    results = retriever.search(texts, top_k)
    timings["search_s"] = time.perf_counter() - start
    metrics = retrieval_metrics(results.indices, relevant_indices(queries, corpus))
    return {
        "stage": stage,
        "num_passages": len(corpus),
        "num_queries": len(queries),
        **{key: round(value, 2) for key, value in timings.items()},
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "recall@100": round(metrics["recall@100"], 4),
        "ndcg@10": round(metrics["ndcg@10"], 4),
    }


def speed(args: argparse.Namespace) -> None:
    corpus, queries = write_synthetic_task(Path(args.data_dir), args.num_passages, args.num_queries)
    print(f"corpus {corpus} ({corpus.stat().st_size / 2**20:.0f} MiB), queries {queries}", flush=True)
    for stage in args.stages:
        command = [sys.executable, __file__, "--run_stage", stage, "--corpus_file", str(corpus)]
        command += [
            "--queries_file",
            str(queries),
            "--top_k",
            str(args.top_k),
            "--hnsw_threshold",
            str(args.hnsw_threshold),
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode:
            print(result.stderr[-3000:])
            raise SystemExit(f"stage {stage} failed")
        print(result.stdout.strip().splitlines()[-1], flush=True)


# ---------------------------------------------------------------------------------------------------------
# The quickstart's retrieval leg
# ---------------------------------------------------------------------------------------------------------

TRAIN_FLAGS = """num_hidden_layers: 2
max_length: 128
num_train_epochs: 1
save_strategy: 'no'
report_to: none
logging_steps: 25
disable_tqdm: true
"""
# name: mine.py flags. BM25 with the teacher filter is round 1 of the rounds run below (not trained twice).
VARIANTS = {
    "bm25_no_filter": ["--retriever", "bm25", "--fn_filter", "false"],
}
HYBRID_VARIANT = {"hybrid_teacher_filter": ["--retriever", "hybrid", "--fn_margin", "0.0"]}


def _run(command: list[str], log: Path) -> float:
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as f:
        result = subprocess.run(command, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, check=False)
    if result.returncode:
        raise SystemExit(f"failed ({log}): {' '.join(command)}")
    return time.perf_counter() - start


def _evaluate(student: str, task: Path, teacher: str, output_dir: Path, with_base: bool) -> dict:
    if (output_dir / "metrics.json").exists():  # a rerun continues where the last one stopped
        return json.loads((output_dir / "metrics.json").read_text())["retrieval"]
    command = [sys.executable, "recipes/evaluate.py", "--model_name_or_path", student, "--student_kind", "embedding"]
    command += ["--corpus_file", str(task / "corpus.jsonl"), "--max_length", "128", "--output_dir", str(output_dir)]
    command += ["--queries_file", str(task / "eval_in_domain.jsonl"), str(task / "eval_out_of_domain.jsonl")]
    if with_base:
        command += ["--base_model_name_or_path", teacher, "--num_hidden_layers", "2"]
        command += ["--teacher_model_name_or_path", teacher, "--teacher_type", "embedding"]
    _run(command, output_dir.with_suffix(".log"))
    return json.loads((output_dir / "metrics.json").read_text())["retrieval"]


def quickstart(out: Path, with_hybrid: bool = False) -> None:
    from hf_distill.retrieval import write_retrieval_task

    from common import QUICKSTART, SPLITS, minilm_path

    teacher = minilm_path()
    out.mkdir(parents=True, exist_ok=True)
    task = out / "task"
    write_retrieval_task([QUICKSTART / f"{split}.jsonl" for split in SPLITS], task)
    train_config = out / "train.yaml"
    train_config.write_text(f"model_name_or_path: {teacher}\n{TRAIN_FLAGS}", encoding="utf-8")
    common = ["--corpus_file", str(task / "corpus.jsonl"), "--queries_file", str(task / "train.jsonl"), "--top_k", "15"]
    common += ["--teacher_type", "embedding", "--teacher_model_name_or_path", teacher, "--max_length", "128"]
    common += ["--retriever_model_name_or_path", teacher]
    table = {}
    for name, flags in {**VARIANTS, **(HYBRID_VARIANT if with_hybrid else {})}.items():
        folder = out / name
        folder.mkdir(exist_ok=True)
        mined = folder / "mined.jsonl"
        mine_s = _run(
            [sys.executable, "recipes/mine.py", *common, *flags, "--output_file", str(mined)], folder / "mine.log"
        )
        summary = json.loads(Path(f"{mined}.mining.json").read_text())
        train_s = None
        if not (folder / "student" / "model.safetensors").exists():  # a rerun continues where the last stopped
            train_s = _run(
                [sys.executable, "recipes/embedding.py", "--config", str(train_config), "--train_file", str(mined)]
                + ["--output_dir", str(folder / "student")],
                folder / "train.log",
            )
        table[name] = {
            "mining": summary,
            "mine_s": round(mine_s, 1),
            "train_s": train_s and round(train_s, 1),
            "retrieval": _evaluate(str(folder / "student"), task, teacher, folder / "evaluation", not table),
        }
        print(name, json.dumps(table[name]["retrieval"], indent=None)[:400], flush=True)
    # A second mining round: round 1 = BM25 + teacher filter, round 2 mines with the round-1 student.
    rounds = out / "rounds"
    _run(
        [sys.executable, "recipes/mine.py", *common[:-2], "--retriever", "bm25", "--rounds", "2"]
        + ["--output_dir", str(rounds), "--train_config", str(train_config)],
        out / "rounds.log",
    )
    for k, name in ((1, "round_1 (bm25_teacher_filter)"), (2, "round_2 (mined by the round-1 student)")):
        table[name] = {
            "mining": json.loads((rounds / f"round_{k}" / "mined.jsonl.mining.json").read_text()),
            "retrieval": _evaluate(str(rounds / f"round_{k}" / "student"), task, teacher, rounds / f"eval_{k}", False),
        }
    (out / "results.json").write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")
    print(markdown(table))


def markdown(table: dict) -> str:
    first = next(iter(table.values()))["retrieval"]
    lines = ["| student (2-layer MiniLM) trained on | nDCG@10 in | Recall@100 in | nDCG@10 out | Recall@100 out |"]
    lines.append("|---|---:|---:|---:|---:|")

    def row(label: str, ind: dict, ood: dict) -> str:
        return f"| {label} | {ind['ndcg@10']:.4f} | {ind['recall@100']:.4f} | {ood['ndcg@10']:.4f} | {ood['recall@100']:.4f} |"

    lines.append(
        row("teacher (MiniLM-L6, dense)", first["eval_in_domain"]["teacher"], first["eval_out_of_domain"]["teacher"])
    )
    lines.append(row("untrained (base)", first["eval_in_domain"]["base"], first["eval_out_of_domain"]["base"]))
    for name, entry in table.items():
        result = entry["retrieval"]
        lines.append(row(name, result["eval_in_domain"]["student"], result["eval_out_of_domain"]["student"]))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num_passages", type=int, default=100_000)
    parser.add_argument("--num_queries", type=int, default=1_000)
    parser.add_argument("--top_k", type=int, default=100)
    parser.add_argument("--hnsw_threshold", type=int, default=1_000_000)
    parser.add_argument("--stages", nargs="+", default=["bm25", "dense"], choices=["bm25", "dense"])
    parser.add_argument("--data_dir", default="/tmp/hf_distill_mining_benchmark")
    parser.add_argument("--quickstart", help="run the quickstart retrieval leg into this folder instead")
    parser.add_argument("--with_hybrid", action="store_true", help="--quickstart: also a BM25 + teacher-dense variant")
    parser.add_argument("--run_stage", choices=["bm25", "dense"], help=argparse.SUPPRESS)
    parser.add_argument("--corpus_file", help=argparse.SUPPRESS)
    parser.add_argument("--queries_file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_stage:
        sys.path.insert(0, str(Path(__file__).parent))
        print(
            json.dumps(run_stage(args.run_stage, args.corpus_file, args.queries_file, args.top_k, args.hnsw_threshold))
        )
    elif args.quickstart:
        sys.path.insert(0, str(Path(__file__).parent))
        quickstart(Path(args.quickstart), args.with_hybrid)
    else:
        speed(args)


if __name__ == "__main__":
    main()
