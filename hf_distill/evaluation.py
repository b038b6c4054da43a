"""Before/after evaluation of a distilled student on ranking eval files: scorers and metrics.

``recipes/evaluate.py`` runs :func:`evaluate_eval_sets`, then renders its results with
:func:`hf_distill.reports.write_reports` (Markdown, JSON, a chart); this module only scores and measures.

**Scoring** reuses the teacher scorers of :mod:`hf_distill.teachers` (:func:`load_scorer`): a reranker is scored
as a cross-encoder teacher (its raw logit), an embedding model as an embedding teacher (cosine of its pooled,
normalised embeddings), once per unique pair or text, in length-sorted token-budget batches, in fp32. The base
model ("before") is built the way the recipes build a student before training (:func:`load_base_scorer`):
optionally cut to its first layers, and a reranker without a one-logit head gets a fresh one, drawn from a fixed
seed, whose scores are random until distillation trains it.

**Metrics** are :func:`hf_distill.metrics.compute_ranking_metrics` on padded ``[queries, candidates]`` matrices,
the numbers the Trainer reports during distillation: MAP, MRR@10, NDCG@10 (binary relevance; only queries with a
relevant and a non-relevant candidate count) and the mean per-query Spearman / Kendall correlation with the
teacher's scores. A file without teacher scores (e.g. MTEB rows ``{query, positive[], negative[]}``) gets no
teacher row and no agreement; a file without labels gets agreement only.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .data import RankingGroup
from .errors import ConfigError
from .kinds import BI_ENCODER, CAUSAL_LM, CROSS_ENCODER, TASKS, Task, is_causal_lm_checkpoint
from .metrics import compute_ranking_metrics
from .teachers import DEFAULT_MAX_TOKENS_PER_BATCH, Teacher, TeacherConfigError, load_teacher, score_groups

logger = logging.getLogger("hf_distill")

K = 10
RANKING_KEYS = ("map", f"mrr@{K}", f"ndcg@{K}")
AGREEMENT_KEYS = ("spearman", "kendall")

# ---------------------------------------------------------------------------------------------------------
# Scorers
# ---------------------------------------------------------------------------------------------------------


def detect_student_kind(model_name_or_path: str) -> str:
    """``embedding`` for a sentence-transformers checkpoint (``modules.json`` or ``1_Pooling/``), else ``reranker``."""
    from .st_format import checkpoint_file

    is_sentence_transformer = checkpoint_file(model_name_or_path, "modules.json") or checkpoint_file(
        model_name_or_path, "1_Pooling/config.json"
    )
    return "embedding" if is_sentence_transformer else "reranker"


def _is_causal_lm_checkpoint(model_name_or_path: str) -> bool:
    try:
        return is_causal_lm_checkpoint(model_name_or_path)
    except (OSError, ValueError):
        return False  # not loadable as a config here: the scorer's own loading reports the problem


def load_scorer(
    task: Task,
    model_name_or_path: str,
    *,
    model: torch.nn.Module | None = None,
    pooling: str | None = None,
    max_length: int | None = None,
    device: str | None = None,
    instruction: str | None = None,
) -> Teacher:
    """A scorer for a ``reranker`` (cross-encoder logit, or yes/no logit gap of a ``*ForCausalLM`` checkpoint
    such as a distilled Qwen3-Reranker) or ``embedding`` (cosine) checkpoint, or for ``model`` already in memory
    (its tokenizer read from ``model_name_or_path``). ``instruction``: the causal reranker's <Instruct> line, or
    an embedding model's Qwen3-Embedding query instruction."""
    if task not in TASKS:
        raise ConfigError(f"student task must be 'reranker' or 'embedding', got {task!r}.")
    if task == "embedding":
        model_kind = BI_ENCODER
    elif model is None and _is_causal_lm_checkpoint(model_name_or_path):
        model_kind = CAUSAL_LM  # the very scorer that scored the teacher: same prompt, same score
    else:
        model_kind = CROSS_ENCODER
        if instruction is not None:
            raise ConfigError(
                "--instruction applies to causal-LM rerankers and embedding models, not to "
                f"the cross-encoder {model_name_or_path}. Fix: drop it."
            )
    try:
        return load_teacher(
            model_kind,
            model_name_or_path,
            model=model,
            pooling=pooling if task == "embedding" else None,
            max_length=max_length,
            instruction=instruction,
            dtype="float32",  # before and after are compared to the 4th decimal: no half-precision noise
            device=device,
            # A decoder student with a one-logit head learnt from tokenizer(query, passage): score it that way.
            **({"allow_decoder": True} if model_kind == CROSS_ENCODER else {}),
        )
    except (TeacherConfigError, OSError) as error:
        raise ConfigError(f"cannot score {model_name_or_path} as a {task}: {str(error).rstrip('.')}.") from None


def load_base_scorer(
    task: Task,
    model_name_or_path: str,
    num_hidden_layers: int | None = None,
    seed: int = 0,
    pooling: str | None = None,
    max_length: int | None = None,
    device: str | None = None,
    instruction: str | None = None,
) -> Teacher:
    """The student before distillation, built as :mod:`hf_distill.recipe` builds it before training.

    Only the first ``num_hidden_layers`` layers are kept when given. A reranker checkpoint without a one-logit
    head (e.g. a bi-encoder) gets a fresh head drawn after ``torch.manual_seed(seed)``, so the baseline is
    reproducible; its scores are random, as the recipe's "before" numbers are. A causal-LM reranker base is
    scored from its checkpoint as it is (it needs no new head).
    """
    from .model_loading import ModelArguments, load_student, quiet_transformers_warnings

    if task == "reranker" and _is_causal_lm_checkpoint(model_name_or_path):
        if num_hidden_layers is not None:
            raise ConfigError("--num_hidden_layers is not supported for a causal-LM base reranker. Fix: drop it.")
        return load_scorer(task, model_name_or_path, max_length=max_length, device=device, instruction=instruction)
    torch.manual_seed(seed)
    # Cutting layers makes transformers list every dropped weight as "unexpected"; that is the point, not news.
    try:
        with quiet_transformers_warnings():
            model, _ = load_student(task, ModelArguments(model_name_or_path, num_hidden_layers=num_hidden_layers))
    except OSError as error:
        raise ConfigError(f"cannot load the base model {model_name_or_path}: {str(error).rstrip('.')}.") from None
    return load_scorer(
        task,
        model_name_or_path,
        model=model,
        pooling=pooling,
        max_length=max_length,
        device=device,
        instruction=instruction,
    )


# ---------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------


def score_matrices(
    groups: Sequence[RankingGroup], model_scores: Sequence[Sequence[float]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pad groups into ``(model_scores, teacher_scores, labels, mask)``, each ``[len(groups), longest group]``.

    Unknown teacher scores are 0 and unknown labels -1 (non-relevant), as in :func:`hf_distill.data.groups_to_dataset`.
    """
    width = max((len(group) for group in groups), default=0)
    model = np.zeros((len(groups), width))
    teacher = np.zeros((len(groups), width))
    labels = np.full((len(groups), width), -1, dtype=np.int64)
    mask = np.zeros((len(groups), width), dtype=bool)
    for row, (group, scores) in enumerate(zip(groups, model_scores, strict=True)):
        n = len(group)
        model[row, :n] = scores
        mask[row, :n] = True
        if group.scores is not None:
            teacher[row, :n] = group.scores
        if group.labels is not None:
            labels[row, :n] = group.labels
    return model, teacher, labels, mask


def ranking_quality(groups: Sequence[RankingGroup], model_scores: Sequence[Sequence[float]], k: int = K) -> dict:
    """:func:`~hf_distill.metrics.compute_ranking_metrics` of ``model_scores`` on ``groups``.

    The teacher's own metrics (``teacher_*``) and the agreement with it are kept only when every group has teacher
    scores; MAP etc. only when some group has a relevant and a non-relevant candidate.
    """
    model, teacher, labels, mask = score_matrices(groups, model_scores)
    metrics = compute_ranking_metrics((model, (teacher, labels, mask)), k=k)
    if not has_teacher_scores(groups):
        metrics = {key: v for key, v in metrics.items() if not key.startswith("teacher_") and key not in AGREEMENT_KEYS}
    return metrics


def has_teacher_scores(groups: Sequence[RankingGroup]) -> bool:
    """Whether every group has teacher scores: the condition for a teacher row and agreement columns."""
    return all(group.scores is not None for group in groups)


def split_teacher(metrics: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Split ``compute_ranking_metrics`` output into the model's metrics and the teacher's (``teacher_`` removed)."""
    teacher = {key.removeprefix("teacher_"): v for key, v in metrics.items() if key.startswith("teacher_")}
    model = {key: v for key, v in metrics.items() if not key.startswith("teacher_")}
    return model, teacher or None


def is_number(value: Any) -> bool:
    """Whether ``value`` is a finite int or float (not a bool, NaN, infinity or ``None``): a metric to show."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def metric_change(before: dict[str, Any], after: dict[str, Any], keys: Sequence[str] | None = None) -> dict:
    """``{metric: {"absolute": after - before, "relative": (after - before) / |before|}}`` for every metric both
    have; ``relative`` is ``None`` when ``before`` is 0."""
    change = {}
    for key in keys or (*RANKING_KEYS, *AGREEMENT_KEYS):
        old, new = before.get(key), after.get(key)
        if is_number(old) and is_number(new):
            absolute = new - old
            change[key] = {"absolute": absolute, "relative": absolute / abs(old) if old != 0 else None}
    return change


def evaluate_eval_sets(
    eval_sets: dict[str, Sequence[RankingGroup]],
    student: Teacher,
    base: Teacher | None = None,
    max_tokens_per_batch: int = DEFAULT_MAX_TOKENS_PER_BATCH,
    k: int = K,
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Score every eval set with the student (and the base) and measure both.

    Returns:
        ``{eval_name: {"num_groups", "has_teacher_scores", "teacher", "base", "student", "change"}}``: whether
        every group has teacher scores, the teacher's metrics from the file's scores (``None`` when unscored), the
        base's and student's metrics (``map``, ``mrr@k``, ``ndcg@k``, ``num_queries``, and ``spearman``,
        ``kendall`` when the file has teacher scores; ``base`` ``None`` without a base) and the student's change
        over the base (:func:`metric_change`; ``None`` without a base).
    """
    results = {}
    for name, groups in eval_sets.items():
        measured = {}
        for row, scorer in (("student", student), ("base", base)):
            if scorer is not None:
                logger.info("%s: scoring %d queries with the %s %s", name, len(groups), row, scorer.model_name_or_path)
                scores = score_groups(scorer, groups, max_tokens_per_batch=max_tokens_per_batch, progress=progress)
                measured[row] = split_teacher(ranking_quality(groups, scores, k=k))
        student_metrics, teacher_metrics = measured["student"]
        base_metrics = measured["base"][0] if "base" in measured else None
        results[name] = {
            "num_groups": len(groups),
            "has_teacher_scores": has_teacher_scores(groups),
            "teacher": teacher_metrics,
            "base": base_metrics,
            "student": student_metrics,
            "change": metric_change(base_metrics, student_metrics) if base_metrics is not None else None,
        }
    return results
