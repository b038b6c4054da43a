"""Ranking metrics on padded score matrices, matching sentence-transformers' reranking evaluators.

Every function here takes score matrices of shape ``[B, N]`` (``B`` queries, up to ``N`` candidates each) and a
``mask [B, N]`` that is true for real candidates and false for padding, the same layout the losses and the
collators use. Inputs may be numpy arrays, torch tensors (any dtype, any device) or nested lists; all computation
is vectorised numpy in float64.

Conventions (read from ``sentence_transformers`` 6.2,
``sentence_transformer/evaluation/reranking.py::RerankingEvaluator`` and
``cross_encoder/evaluation/reranking.py::CrossEncoderRerankingEvaluator``, which compute every metric with
``sklearn.metrics.average_precision_score`` / ``ndcg_score`` and a hand-written MRR loop):

* **Relevance is binary**: a candidate is relevant iff its label is ``> 0``. Labels ``0`` (negative), ``-1``
  (unknown, e.g. a mined candidate) and ``-100`` (Trainer padding) are all non-relevant; graded labels are binarised.
* **Which groups are scored**: a group counts only if it has at least one relevant and at least one non-relevant
  real candidate. This is ``RerankingEvaluator`` (and MTEB v1, which used it), which drops such samples up
  front. ``CrossEncoderRerankingEvaluator`` differs: it averages a group without positives in as ``0`` for all
  three metrics, and scores a group without negatives as ``1`` (and raises inside sklearn when that group has a
  single document). Its number is ours times ``num_queries / len(samples)`` when every group has a negative.
* **MAP** is over the full candidate list (no cut-off), exactly sklearn's ``average_precision_score``:
  ``AP = sum_t (R_t - R_{t-1}) P_t`` over the *distinct* score thresholds ``t``, so a block of tied candidates is
  entered all at once and contributes the precision at the end of the block.
* **NDCG@k** is sklearn's ``ndcg_score(k=k)`` with its default ``ignore_ties=False``: discounts
  ``1 / log2(rank + 1)`` for ranks ``1..k`` and ``0`` beyond; a block of tied candidates receives its average gain
  at every position in the block (the expected DCG over random orders of the tie, McSherry & Najork, ECIR 2008).
  The ideal DCG places all ``P`` positives first: ``sum_{r=1}^{min(P, k)} 1 / log2(r + 1)``.
* **MRR@k** is ``1 / rank`` of the first relevant candidate if that rank is ``<= k``, else ``0``; identical to both
  evaluators when scores are distinct. Under ties the evaluators depend on the sort routine: ``torch.argsort(-s)``
  (bi-encoder) and ``np.argsort(s)[::-1]`` (cross-encoder) are both unstable on current CPUs (SIMD sorts), so their
  MRR on tied scores is not defined by anything but the build. We use the expectation over a uniformly random order
  of the tied candidates, consistent with sklearn's tie-averaged NDCG. A constant-score student therefore gets
  ``E[1 / rank]``, not the ``1.0`` a "positives first" tie rule would flatter it with.

References: Manning, Raghavan & Schütze, *Introduction to Information Retrieval* (2008), ch. 8 (MAP, NDCG);
Voorhees, *The TREC-8 Question Answering Track Report* (1999) (MRR); Järvelin & Kekäläinen, *Cumulated
gain-based evaluation of IR techniques*, TOIS 2002 (NDCG).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

# scipy is imported where it is used: a training run without eval sets never computes a metric (scipy.stats
# alone is ~0.5 s of a run's start-up on 2 cores).

__all__ = ["ranking_metrics", "teacher_agreement", "compute_ranking_metrics"]

logger = logging.getLogger("hf_distill")

# The Trainer fills every tensor of every eval batch up to the widest batch with this value.
TRAINER_PADDING_INDEX = -100

# Kendall's tau on short lists builds a [rows, N, N] sign tensor in chunks of at most this many pairs (~50 MB);
# past 64 candidates a per-row scipy call is faster (measured on 2 CPU cores: 2,000 x 100 took 0.46 s vs 0.27 s).
_MAX_PAIR_ELEMENTS = 2**24
_MAX_VECTORISED_KENDALL_WIDTH = 64


def _to_numpy(value: Any, name: str) -> np.ndarray:
    """Torch tensor (any dtype/device, incl. bf16), numpy array or nested list -> numpy array."""
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch for numpy users
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.double()  # numpy has no bfloat16
        value = value.numpy()
    array = np.asarray(value)
    if array.ndim != 2:
        raise ValueError(
            f"metrics: '{name}' has shape {array.shape}, expected a 2-D [num_queries, num_candidates] matrix. "
            f"Fix: pass one row per query, padded to the longest group, with `mask` false on the padding."
        )
    return array


def _check_shapes(**arrays: np.ndarray) -> None:
    shapes = {name: array.shape for name, array in arrays.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"'{name}' {shape}" for name, shape in shapes.items())
        raise ValueError(
            f"metrics: inputs disagree in shape: {listed}. "
            f"Fix: pad every matrix to the same [num_queries, num_candidates] and mark padding in `mask`."
        )


def _check_finite(scores: np.ndarray, mask: np.ndarray, name: str) -> None:
    bad = mask & ~np.isfinite(scores)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(
            f"metrics: '{name}' is {scores[row, col]} at query {row}, candidate {col} ({int(bad.sum())} such "
            f"entries among unmasked candidates). Fix: scores must be finite; a NaN student score usually means "
            f"training diverged (lower the learning rate or use bf16 instead of fp16); a padded candidate must "
            f"have mask false."
        )


def _sort_descending(scores: np.ndarray, mask: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Sort each row by score, highest first, with padding after every real candidate."""
    order = np.lexsort((-scores, ~mask), axis=-1)
    return [np.take_along_axis(array, order, axis=1) for array in (scores, mask, *others)]


def _expected_reciprocal_rank(
    scores: np.ndarray, relevant: np.ndarray, mask: np.ndarray, num_positives: np.ndarray, k: int
) -> np.ndarray:
    """E[1/rank of the first relevant candidate, 0 beyond k] over random orders of tied candidates.

    The first relevant candidate has the best positive score ``s*``. ``g`` candidates score strictly higher (all
    non-relevant), ``m`` tie at ``s*``, ``r`` of them relevant. In a random order of the tie the first relevant
    one sits at position ``j`` of the block with hypergeometric probability ``C(m - j, r - 1) / C(m, r)``, so
    ``E = sum_{j=1}^{m-r+1} [g + j <= k] C(m - j, r - 1) / C(m, r) / (g + j)``. Without ties ``m = r = 1`` and
    this is ``1 / (g + 1)``.
    """
    from scipy.special import gammaln

    best_positive = np.where(relevant, scores, -np.inf).max(axis=1, keepdims=True)
    above = (mask & (scores > best_positive)).sum(axis=1)
    tied = (mask & (scores == best_positive)).sum(axis=1)
    tied_relevant = (relevant & (scores == best_positive)).sum(axis=1)
    # Rows with no positive get m = r = 0 here; they are skipped by the caller, keep the math finite anyway.
    g, m, r = above[:, None], np.maximum(tied, 1)[:, None], np.maximum(tied_relevant, 1)[:, None]

    j = np.arange(1, max(k, 1) + 1)[None, :]  # positions past k cannot count, so k columns suffice
    feasible = (j <= m - r + 1) & (g + j <= k)
    jj = np.where(feasible, j, 1)  # keep gammaln's arguments positive in the masked-out cells
    log_prob = (
        gammaln(m - jj + 1)
        - gammaln(r)
        - gammaln(m - jj - r + 2)  # log C(m - j, r - 1)
        - (gammaln(m + 1) - gammaln(r + 1) - gammaln(m - r + 1))  # log C(m, r)
    )
    reciprocal = np.where(feasible, np.exp(log_prob) / (g + jj), 0.0).sum(axis=1)
    return np.where(num_positives > 0, reciprocal, 0.0)


def ranking_metrics(scores: Any, labels: Any, mask: Any, k: int = 10) -> dict[str, float]:
    """MAP, MRR@k and NDCG@k of the ranking each row of ``scores`` induces, as sentence-transformers reports them.

    Args:
        scores: ``[B, N]`` model scores, higher = more relevant.
        labels: ``[B, N]`` relevance; a candidate is relevant iff its label is ``> 0`` (``-1`` unknown and
            ``-100`` Trainer padding count as non-relevant).
        mask: ``[B, N]``, true (or ``> 0``) for real candidates, false for padding; padded entries never
            influence the result.
        k: cut-off of MRR and NDCG; MAP always uses the full list.

    Returns:
        ``{"map", f"mrr@{k}", f"ndcg@{k}", "num_queries"}``: means over the scored groups, and how many groups
        were scored (those with at least one relevant and one non-relevant candidate). With no scored group the
        three means are ``nan``.

    For one group with ranks ``1..n`` (descending score), ``P`` relevant candidates, ``rel_i`` in {0, 1} and
    ``Prec@i`` the precision of the top ``i``::

        AP     = (1 / P) * sum_i rel_i * Prec@i                 (ties: entered together, see module docstring)
        RR@k   = 1 / min{i : rel_i = 1}   if that rank <= k, else 0
        NDCG@k = sum_{i<=k} rel_i / log2(i + 1)  /  sum_{i<=min(P,k)} 1 / log2(i + 1)

    See the module docstring for how ties and skipped groups match ``RerankingEvaluator`` and
    ``CrossEncoderRerankingEvaluator``.

    Example::

        >>> ranking_metrics([[0.9, 0.1, 0.5]], [[0, 1, 0]], [[True, True, True]])
        {'map': 0.333..., 'mrr@10': 0.333..., 'ndcg@10': 0.5000..., 'num_queries': 1}
    """
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"ranking_metrics: k={k!r} must be a positive int. Fix: pass e.g. k=10.")
    scores = _to_numpy(scores, "scores").astype(np.float64)
    labels = _to_numpy(labels, "labels")
    mask = _to_numpy(mask, "mask") > 0
    _check_shapes(scores=scores, labels=labels, mask=mask)
    _check_finite(scores, mask, "scores")
    scores = np.where(mask, scores, 0.0)  # padding may hold NaN or -100; keep it out of every comparison

    relevant = mask & (labels > 0)
    num_positives = relevant.sum(axis=1)
    num_candidates = mask.sum(axis=1)
    scored = (num_positives > 0) & (num_positives < num_candidates)
    num_queries = int(scored.sum())
    keys = ("map", f"mrr@{k}", f"ndcg@{k}")
    if num_queries == 0:
        return {**{key: float("nan") for key in keys}, "num_queries": 0}

    scores, mask, relevant = scores[scored], mask[scored], relevant[scored]
    num_positives = num_positives[scored]
    reciprocal_rank = _expected_reciprocal_rank(scores, relevant, mask, num_positives, k)

    sorted_scores, sorted_mask, sorted_relevant = _sort_descending(scores, mask, relevant)
    num_rows, width = sorted_scores.shape
    position = np.arange(width)
    # A tie block ends where the next real candidate scores differently (or there is no next real candidate).
    next_differs = np.ones_like(sorted_mask)
    next_differs[:, :-1] = (sorted_scores[:, 1:] != sorted_scores[:, :-1]) | ~sorted_mask[:, 1:]
    block_end = sorted_mask & next_differs
    hits = np.cumsum(sorted_relevant, axis=1)  # relevant candidates among the top position+1
    # Hits and position at the previous block's end: running max works because both only grow along the row.
    hits_before = np.zeros_like(hits)
    hits_before[:, 1:] = np.maximum.accumulate(np.where(block_end, hits, 0), axis=1)[:, :-1]
    end_before = np.full(hits.shape, -1)
    end_before[:, 1:] = np.maximum.accumulate(np.where(block_end, position, -1), axis=1)[:, :-1]
    block_hits = np.where(block_end, hits - hits_before, 0)

    # sklearn: AP = sum over thresholds of (recall gain) x (precision at the threshold).
    average_precision = (block_hits * hits / (position + 1)).sum(axis=1) / num_positives

    discount = np.where(position < k, 1.0 / np.log2(position + 2), 0.0)
    cumulative_discount = np.concatenate([[0.0], np.cumsum(discount)])  # index i+1 = sum of discount[:i+1]
    block_size = position - end_before
    block_discount = cumulative_discount[position + 1] - cumulative_discount[end_before + 1]
    dcg = np.where(block_end, block_hits / block_size * block_discount, 0.0).sum(axis=1)
    ideal_dcg = cumulative_discount[np.minimum(num_positives, k)]
    ndcg = dcg / ideal_dcg

    return {
        "map": float(average_precision.mean()),
        f"mrr@{k}": float(reciprocal_rank.mean()),
        f"ndcg@{k}": float(ndcg.mean()),
        "num_queries": num_queries,
    }


def _masked_pearson(x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-row Pearson correlation over the masked entries; 0 where either row is constant."""
    count = mask.sum(axis=1, keepdims=True)
    x_centred = np.where(mask, x - (np.where(mask, x, 0).sum(axis=1, keepdims=True) / count), 0.0)
    y_centred = np.where(mask, y - (np.where(mask, y, 0).sum(axis=1, keepdims=True) / count), 0.0)
    covariance = (x_centred * y_centred).sum(axis=1)
    norm = np.sqrt((x_centred**2).sum(axis=1) * (y_centred**2).sum(axis=1))
    # Ranks are small integers or halves, so a constant row gives exactly zero spread, not rounding noise.
    return np.divide(covariance, norm, out=np.zeros_like(covariance), where=norm > 0)


def _masked_kendall_tau_b(x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-row Kendall tau-b over the masked entries (scipy's default variant); 0 where either row is constant.

    ``tau_b = sum_{i<j} sgn(x_i - x_j) sgn(y_i - y_j) / sqrt(#pairs untied in x * #pairs untied in y)``.
    """
    taus = np.zeros(x.shape[0])
    width = x.shape[1]
    if width > _MAX_VECTORISED_KENDALL_WIDTH:
        # scipy's O(n log n) merge-sort count beats the O(n^2) pair tensor on long lists.
        from scipy.stats import kendalltau

        for row in range(x.shape[0]):
            x_row, y_row = x[row, mask[row]], y[row, mask[row]]
            if np.ptp(x_row) > 0 and np.ptp(y_row) > 0:  # constant rows stay 0 (scipy: NaN + warning)
                taus[row] = kendalltau(x_row, y_row).statistic
        return taus
    rows_per_chunk = max(1, _MAX_PAIR_ELEMENTS // max(width * width, 1))
    for start in range(0, x.shape[0], rows_per_chunk):
        chunk = slice(start, start + rows_per_chunk)
        pair_valid = mask[chunk, :, None] & mask[chunk, None, :]
        sign_x = np.sign(x[chunk, :, None] - x[chunk, None, :]).astype(np.int8) * pair_valid
        sign_y = np.sign(y[chunk, :, None] - y[chunk, None, :]).astype(np.int8) * pair_valid
        # Each unordered pair appears twice (i, j) and (j, i) with the same product, so the factor 2 cancels.
        concordance = (sign_x.astype(np.int64) * sign_y).sum(axis=(1, 2))
        untied = np.abs(sign_x).sum(axis=(1, 2), dtype=np.int64) * np.abs(sign_y).sum(axis=(1, 2), dtype=np.int64)
        norm = np.sqrt(untied.astype(np.float64))
        taus[chunk] = np.divide(concordance, norm, out=np.zeros(norm.shape), where=norm > 0)
    return taus


def teacher_agreement(student_scores: Any, teacher_scores: Any, mask: Any) -> dict[str, float]:
    """How closely the student's ranking of each group follows the teacher's: mean per-query rank correlations.

    ``spearman`` is Spearman's rho (Pearson correlation of average-tie ranks) and ``kendall`` Kendall's tau-b, both
    as ``scipy.stats.spearmanr`` / ``kendalltau`` compute them for one query, averaged over queries. Groups with
    fewer than two real candidates are skipped (no ordering to compare). A group where the student or the
    teacher gives every candidate the same score has no defined correlation (scipy returns NaN with a warning);
    we count it as ``0.0``, "no agreement", so a collapsed student is penalised rather than hidden. With no
    group of two or more candidates both values are ``nan``.

    Unlike MAP/NDCG this needs no labels, so it measures distillation directly on unlabelled eval data:
    1.0 means the student orders every group exactly like the teacher, -1.0 exactly reversed.

    Example::

        >>> teacher_agreement([[1.0, 2.0, 3.0]], [[10.0, 20.0, 30.0]], [[True, True, True]])
        {'spearman': 1.0, 'kendall': 1.0}
    """
    student = _to_numpy(student_scores, "student_scores").astype(np.float64)
    teacher = _to_numpy(teacher_scores, "teacher_scores").astype(np.float64)
    mask = _to_numpy(mask, "mask") > 0
    _check_shapes(student_scores=student, teacher_scores=teacher, mask=mask)
    _check_finite(student, mask, "student_scores")
    _check_finite(teacher, mask, "teacher_scores")
    student, teacher = np.where(mask, student, 0.0), np.where(mask, teacher, 0.0)  # padding may hold NaN

    kept = mask.sum(axis=1) >= 2
    if not kept.any():
        return {"spearman": float("nan"), "kendall": float("nan")}
    student, teacher, mask = student[kept], teacher[kept], mask[kept]

    from scipy.stats import rankdata

    # Padding at +inf ranks above every real candidate, so real candidates keep their ranks among themselves.
    student_ranks = rankdata(np.where(mask, student, np.inf), axis=1)
    teacher_ranks = rankdata(np.where(mask, teacher, np.inf), axis=1)
    spearman = _masked_pearson(student_ranks, teacher_ranks, mask)
    kendall = _masked_kendall_tau_b(student, teacher, mask)
    return {"spearman": float(spearman.mean()), "kendall": float(kendall.mean())}


def compute_ranking_metrics(eval_pred: Any, k: int = 10, eval_set_name: str | None = None) -> dict[str, float]:
    """``compute_metrics`` for ``transformers.Trainer``: student and teacher ranking quality plus their agreement.

    Args:
        eval_pred: a ``transformers.EvalPrediction`` (or ``(predictions, label_ids)``) with
            ``predictions`` = student scores ``[B, N]`` (a tuple whose first element is that matrix also works) and
            ``label_ids = (teacher_scores [B, N], labels [B, N], mask [B, N])``.
        k: cut-off of MRR and NDCG; bind it with ``functools.partial(compute_ranking_metrics, k=5)``.
        eval_set_name: only named in the warnings below, so a log with several eval sets says which one it was.

    Returns:
        Always ``map``, ``mrr@k``, ``ndcg@k``, ``num_queries`` of the student and ``spearman``, ``kendall``
        (``teacher_agreement``); ``teacher_map``, ``teacher_mrr@k``, ``teacher_ndcg@k`` of the teacher (the
        ceiling a perfect imitation would reach) only when at least one group has a relevant and a non-relevant
        candidate. The Trainer prefixes them with ``eval_``.

    This never raises on the data of an evaluation, so a periodic eval cannot kill a long training run; instead
    it logs one warning on the ``hf_distill`` logger saying why some values are ``nan``:

    * no group has both a labelled relevant (``label > 0``) and a non-relevant candidate (labels all 0, all 1 or
      all unknown): ``map``/``mrr@k``/``ndcg@k`` are ``nan`` and ``num_queries`` is 0, so a
      ``metric_for_best_model`` such as ``eval_x_map`` still finds its key;
    * some real student scores are NaN or infinite (a diverged student): the student's ``map``, ``mrr@k``,
      ``ndcg@k``, ``spearman`` and ``kendall`` are ``nan`` for this evaluation (``num_queries`` still counts the
      labelled groups, the teacher's metrics are unaffected);
    * some real teacher scores are non-finite: the ``teacher_*`` metrics and the agreement are ``nan``.

    The Trainer concatenates eval batches of different widths by padding every tensor with ``-100``. A real
    candidate is therefore one with ``mask > 0`` *and* ``labels != -100``: a boolean mask padded with ``-100``
    comes back ``True`` (``torch.full(..., -100, dtype=bool)`` is all true), so the mask alone cannot be trusted
    in the padded columns, while labels (``-1``, ``0``, ``1``) are never ``-100`` on a real candidate.
    """
    predictions = eval_pred.predictions if hasattr(eval_pred, "predictions") else eval_pred[0]
    label_ids = eval_pred.label_ids if hasattr(eval_pred, "label_ids") else eval_pred[1]
    if isinstance(predictions, tuple):  # the model returned extra outputs; the scores come first
        predictions = predictions[0]
    if not isinstance(label_ids, (tuple, list)) or len(label_ids) != 3:
        raise ValueError(
            f"compute_ranking_metrics: eval_pred.label_ids is {type(label_ids).__name__}"
            f"{'' if not isinstance(label_ids, (tuple, list)) else f' of length {len(label_ids)}'}, expected the "
            f"tuple (teacher_scores, labels, mask). Fix: set `label_names=['teacher_scores', 'labels', 'mask']` "
            f"in the TrainingArguments so the Trainer collects those three batch keys."
        )
    student = _to_numpy(predictions, "predictions").astype(np.float64)
    teacher = _to_numpy(label_ids[0], "label_ids[0] (teacher_scores)").astype(np.float64)
    labels = _to_numpy(label_ids[1], "label_ids[1] (labels)")
    mask = (_to_numpy(label_ids[2], "label_ids[2] (mask)") > 0) & (labels != TRAINER_PADDING_INDEX)
    _check_shapes(predictions=student, teacher_scores=teacher, labels=labels, mask=mask)

    keys = ("map", f"mrr@{k}", f"ndcg@{k}")
    nan_ranking = {key: float("nan") for key in keys}
    num_real = int(mask.sum())
    student_bad = int((mask & ~np.isfinite(student)).sum())
    teacher_bad = int((mask & ~np.isfinite(teacher)).sum())
    relevant = mask & (labels > 0)
    num_queries = int(((relevant.sum(axis=1) > 0) & (relevant.sum(axis=1) < mask.sum(axis=1))).sum())
    problems = []
    if num_queries == 0:
        problems.append(
            f"none of the {int(mask.any(axis=1).sum())} queries has both a labelled positive (label > 0) and a "
            f"negative candidate (labels all 0, all 1 or unknown -1), so {'/'.join(keys)} are NaN and num_queries "
            f"is 0. Fix: evaluate on a set with relevance labels, or choose metric_for_best_model among "
            f"spearman/kendall"
        )
    if student_bad:
        problems.append(
            f"{student_bad} of {num_real} student scores are non-finite (NaN or inf), so the student's "
            f"{'/'.join(keys)}/spearman/kendall are NaN for this evaluation. Fix: training has probably diverged; "
            f"lower the learning rate or use bf16 instead of fp16"
        )
    if teacher_bad:
        problems.append(
            f"{teacher_bad} of {num_real} teacher scores are non-finite (NaN or inf), so teacher_* and "
            f"spearman/kendall are NaN for this evaluation. Fix: re-score the eval file (teacher scores must be finite)"
        )
    if problems:
        where = "" if eval_set_name is None else f" on eval set {eval_set_name!r}"
        logger.warning("compute_ranking_metrics%s: %s.", where, "; ".join(problems))

    metrics: dict[str, float] = {}
    if student_bad:
        metrics.update({**nan_ranking, "num_queries": num_queries})
    else:
        metrics.update(ranking_metrics(student, labels, mask, k=k))
    if num_queries > 0:
        teacher_ranking = nan_ranking if teacher_bad else ranking_metrics(teacher, labels, mask, k=k)
        metrics.update({f"teacher_{key}": teacher_ranking[key] for key in keys})
    if student_bad or teacher_bad:
        metrics.update({"spearman": float("nan"), "kendall": float("nan")})
    else:
        metrics.update(teacher_agreement(student, teacher, mask))
    return metrics
