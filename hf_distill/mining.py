"""Teacher-guided hard-negative mining: from a corpus and queries to listwise training rows, with no labels needed.

For every query (:func:`mine`):

1. **first stage**: a retriever of :mod:`hf_distill.retrieval` (BM25, dense with any embedding model, the student
   included, or their RRF fusion) returns its best passages;
2. **candidate selection** (:func:`select_candidates`): known positives, repeated texts and retrieval padding are
   set aside, the first ``skip_top`` remaining ranks are skipped (the ranks where unlabelled positives hide most),
   and the next ``top_k`` are kept;
3. **teacher scoring**: the query's known positives and candidates go through
   :func:`hf_distill.teachers.score_to_file`, the resumable, data-parallel scorer (``kill -9`` safe: rerun the same
   command and it continues; a pair shared by several queries is scored once);
4. **false-negative filter** (:func:`false_negative_filter`): a candidate the teacher scores within ``fn_margin`` of
   the query's weakest known positive, or above it, is probably an unlabelled positive and is dropped; a query
   without a known positive takes the teacher's best candidate as its positive (label 1, a pseudo-positive) and
   drops the candidates within ``fn_margin`` of it.

The output is listwise JSONL ``{"query", "passages", "scores", "labels", "passage_ids", "query_id"}``: known or
pseudo positives first (label 1), then the kept candidates in first-stage order (label 0; ``-1`` with the filter
off and no known positive), with the teacher's raw scores. ``recipes/reranker.py`` and ``recipes/embedding.py``
train on it as it is (the extra keys are ignored). A query left with fewer than two passages is not written.
``<output_file>.mining.json`` records the counts; ``<output_file>.teacher_scores.jsonl`` keeps every scored pair
before the filter.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .data import UNKNOWN_LABEL, RankingGroup
from .errors import ConfigError, HfDistillError
from .retrieval import Corpus, Query, RetrievalResults
from .teachers import DEFAULT_MAX_TOKENS_PER_BATCH, Teacher, score_to_file

logger = logging.getLogger("hf_distill")


def select_candidates(
    results: RetrievalResults,
    queries: Sequence[Query],
    corpus: Corpus,
    top_k: int,
    skip_top: int = 0,
) -> list[list[int]]:
    """Per query, the corpus indices of its candidates: first-stage results in rank order without padding, known
    positives and passages whose text repeats a positive's or an earlier candidate's; of those, ranks
    ``skip_top + 1 .. skip_top + top_k``."""
    if top_k < 1 or skip_top < 0:
        raise ConfigError(f"--top_k must be >= 1 and --skip_top >= 0, got {top_k} and {skip_top}.")
    candidates = []
    for query, ranked in zip(queries, results.indices, strict=True):
        positives = {corpus.position[passage_id] for passage_id in query.positive_ids}
        seen_texts = {corpus.texts[i] for i in positives}
        kept = []
        for index in ranked:
            index = int(index)
            if index < 0 or index in positives or corpus.texts[index] in seen_texts:
                continue
            seen_texts.add(corpus.texts[index])
            kept.append(index)
            if len(kept) == skip_top + top_k:
                break
        candidates.append(kept[skip_top:])
    return candidates


def false_negative_filter(
    teacher_scores: Sequence[float], num_positives: int, margin: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """Which passages of a scored group to keep, and their labels. The group is ``num_positives`` known positives
    followed by candidates; ``s`` are the teacher's scores.

    With known positives (``P > 0``), candidate ``c`` is dropped when ``s_c >= min_{p} s_p - margin``: it scores
    within ``margin`` of the weakest positive or above it. Without (``P = 0``), the best candidate
    ``c* = argmax s`` becomes the pseudo-positive (label 1) and every other ``c`` with ``s_c >= s_{c*} - margin``
    is dropped. ``margin=None`` turns the filter off: everything is kept, candidates labelled 0 (``-1``, unknown,
    when ``P = 0``). The threshold follows the positive-aware mining of NV-Retriever (Moreira et al., 2024),
    with an absolute margin.

    Returns:
        ``keep [N]`` (bool) and ``labels [N]`` (int: 1 positive, 0 negative, -1 unknown) over the whole group.
    """
    scores = np.asarray(teacher_scores, dtype=np.float64)
    if margin is not None and margin < 0:
        raise ConfigError(f"--fn_margin must be >= 0, got {margin}.")
    if not 0 <= num_positives <= len(scores):
        raise ConfigError(f"num_positives must be in [0, {len(scores)}], got {num_positives}.")
    labels = np.zeros(len(scores), dtype=np.int64)
    labels[:num_positives] = 1
    keep = np.ones(len(scores), dtype=bool)
    if margin is None:
        if num_positives == 0:
            labels[:] = UNKNOWN_LABEL
        return keep, labels
    if num_positives:
        threshold = scores[:num_positives].min() - margin
        keep[num_positives:] = scores[num_positives:] < threshold
        return keep, labels
    if len(scores):
        best = int(np.argmax(scores))
        labels[best] = 1
        keep = scores < scores[best] - margin
        keep[best] = True
    return keep, labels


@dataclass
class MiningSummary:
    """What :func:`mine` did, as ``<output_file>.mining.json`` records it."""

    num_queries: int
    num_rows: int
    num_candidates_scored: int
    num_false_negatives_dropped: int
    num_pseudo_positives: int
    num_queries_left_out: int  # fewer than two passages after the filter
    retrieval_s: float
    scoring_s: float


def _write_rows_atomically(rows: Sequence[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def teacher_scores_file(output_file: str | os.PathLike) -> Path:
    """Where :func:`mine` keeps the teacher's scores of every candidate, before the filter."""
    return Path(f"{os.fspath(output_file)}.teacher_scores.jsonl")


def mine(
    queries: Sequence[Query],
    corpus: Corpus,
    retriever: Any,
    teacher: Teacher,
    output_file: str | os.PathLike,
    top_k: int = 16,
    skip_top: int = 0,
    fn_margin: float | None = 0.0,
    retrieval_depth: int | None = None,
    max_tokens_per_batch: int = DEFAULT_MAX_TOKENS_PER_BATCH,
    overwrite_partial: bool = False,
    progress: bool = True,
) -> MiningSummary | None:
    """Retrieve, select, score with the teacher, filter and write (see the module docstring).

    ``retrieval_depth``: how deep the first stage searches (default: ``skip_top + top_k`` plus the largest number
    of known positives plus 16 for repeated texts). Call it in every process of an ``accelerate launch``: each
    process retrieves (deterministically, the same), the teacher's pairs are shared out among them, and rank 0
    writes the file and returns the summary (other ranks return ``None``).
    """
    output_file = Path(output_file)
    depth = retrieval_depth or skip_top + top_k + max((len(q.positive_ids) for q in queries), default=0) + 16
    start = time.perf_counter()
    results = retriever.search([query.text for query in queries], depth)
    candidates = select_candidates(results, queries, corpus, top_k, skip_top)
    retrieval_s = time.perf_counter() - start
    groups, kept_queries = [], []
    for q, (query, chosen) in enumerate(zip(queries, candidates)):
        passages = [corpus.position[passage_id] for passage_id in query.positive_ids] + chosen
        if len(passages) < 2:
            continue  # nothing to rank against (a query BM25 shares no word with, in a tiny corpus)
        labels = [1] * len(query.positive_ids) + [UNKNOWN_LABEL] * len(chosen)
        groups.append(RankingGroup(query.text, [corpus.texts[i] for i in passages], None, labels))
        kept_queries.append((q, passages))
    if not groups:
        raise HfDistillError(
            f"no query got two passages to rank from the first stage ({len(queries)} queries). Fix: check that the "
            "queries and the corpus are in the same language, or use --retriever dense."
        )
    start = time.perf_counter()
    scored_file = teacher_scores_file(output_file)
    done = score_to_file(
        teacher,
        groups,
        scored_file,
        max_tokens_per_batch=max_tokens_per_batch,
        overwrite_partial=overwrite_partial,
        input_name="mined candidates",
        progress=progress,
    )
    scoring_s = time.perf_counter() - start
    if done is None:
        return None  # not rank 0: this process's share is scored
    with open(scored_file, encoding="utf-8") as f:
        scored_rows = [json.loads(line) for line in f if line.strip()]
    if len(scored_rows) != len(groups):
        raise HfDistillError(
            f"{scored_file} has {len(scored_rows)} rows for {len(groups)} groups. Fix: delete it and its "
            f"{scored_file.name}.scoring.json, then rerun."
        )
    rows, dropped, pseudo, left_out = [], 0, 0, len(queries) - len(groups)
    for (q, passages), scored in zip(kept_queries, scored_rows):
        query = queries[q]
        keep, labels = false_negative_filter(scored["scores"], len(query.positive_ids), fn_margin)
        dropped += int((~keep).sum())
        pseudo += int(not query.positive_ids and fn_margin is not None)
        order = np.flatnonzero(keep)
        if not query.positive_ids and fn_margin is not None:
            best = int(np.argmax(labels))
            order = np.concatenate([[best], order[order != best]])  # the pseudo-positive first, like known ones
        if len(order) < 2:
            left_out += 1
            continue
        rows.append(
            {
                "query": query.text,
                "passages": [corpus.texts[passages[i]] for i in order],
                "scores": [float(scored["scores"][i]) for i in order],
                "labels": [int(labels[i]) for i in order],
                "passage_ids": [corpus.ids[passages[i]] for i in order],
                "query_id": query.id,
            }
        )
    _write_rows_atomically(rows, output_file)
    summary = MiningSummary(
        num_queries=len(queries),
        num_rows=len(rows),
        num_candidates_scored=sum(len(c) for c in candidates),
        num_false_negatives_dropped=dropped,
        num_pseudo_positives=pseudo,
        num_queries_left_out=left_out,
        retrieval_s=round(retrieval_s, 3),
        scoring_s=round(scoring_s, 3),
    )
    Path(f"{os.fspath(output_file)}.mining.json").write_text(json.dumps(vars(summary), indent=2) + "\n")
    logger.info(
        "mined %d rows for %d queries into %s: %d false negatives dropped, %d pseudo-positives, %d queries left out",
        summary.num_rows,
        summary.num_queries,
        output_file,
        dropped,
        pseudo,
        left_out,
    )
    return summary
