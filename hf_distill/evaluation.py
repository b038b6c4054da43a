"""Before/after evaluation of a distilled student on ranking eval files: scores, metrics, Markdown, a chart.

``recipes/evaluate.py`` runs :func:`evaluate_eval_sets` and :func:`write_reports`; the model card
(:mod:`hf_distill.hub`) renders its tables with :func:`markdown_table`, so both read the same.

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

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .cli import ConfigError
from .data import RankingGroup
from .metrics import compute_ranking_metrics
from .teachers import DEFAULT_MAX_TOKENS_PER_BATCH, Teacher, TeacherConfigError, load_teacher, score_groups

logger = logging.getLogger("hf_distill")

K = 10
RANKING_KEYS = ("map", f"mrr@{K}", f"ndcg@{K}")
AGREEMENT_KEYS = ("spearman", "kendall")
COLUMN_TITLES = {
    "map": "MAP",
    f"mrr@{K}": f"MRR@{K}",
    f"ndcg@{K}": f"NDCG@{K}",
    "spearman": "Spearman vs teacher",
    "kendall": "Kendall vs teacher",
}
ROWS = ("teacher", "base", "student")
_ROW_LEGEND = {"teacher": "teacher", "base": "base (before)", "student": "student (after)"}
_ROW_COLOURS = {"teacher": "#9e9e9e", "base": "#90caf9", "student": "#1565c0"}
_MISSING = "—"
# Said in the log, metrics.md and the model card for an eval set without teacher scores (e.g. MTEB rows).
NO_TEACHER_NOTE = "no teacher scores in {where}: teacher row and agreement columns left out"
CHART_SKIPPED = 'chart skipped: matplotlib is not installed (pip install matplotlib, or pip install "hf_distill[plot]")'

# ---------------------------------------------------------------------------------------------------------
# Scorers
# ---------------------------------------------------------------------------------------------------------


def detect_student_kind(model_name_or_path: str) -> str:
    """``embedding`` for a sentence-transformers checkpoint (``modules.json`` or ``1_Pooling/``), else ``reranker``."""
    from .teachers.models import checkpoint_file

    is_sentence_transformer = checkpoint_file(model_name_or_path, "modules.json") or checkpoint_file(
        model_name_or_path, "1_Pooling/config.json"
    )
    return "embedding" if is_sentence_transformer else "reranker"


def _is_causal_lm_checkpoint(model_name_or_path: str) -> bool:
    from .students import is_causal_lm_checkpoint

    try:
        return is_causal_lm_checkpoint(model_name_or_path)
    except (OSError, ValueError):
        return False  # not loadable as a config here: the scorer's own loading reports the problem


def load_scorer(
    kind: str,
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
    if kind not in ("reranker", "embedding"):
        raise ConfigError(f"student kind must be 'reranker' or 'embedding', got {kind!r}.")
    if kind == "embedding":
        teacher_type = "embedding"
    elif model is None and _is_causal_lm_checkpoint(model_name_or_path):
        teacher_type = "qwen3_reranker"  # the very scorer that scored the teacher: same prompt, same score
    else:
        teacher_type = "cross_encoder"
        if instruction is not None:
            raise ConfigError("--instruction applies to causal-LM rerankers and embedding models, not to "
                              f"the cross-encoder {model_name_or_path}. Fix: drop it.")
    try:
        return load_teacher(
            teacher_type,
            model_name_or_path,
            model=model,
            pooling=pooling if kind == "embedding" else None,
            max_length=max_length,
            instruction=instruction,
            dtype="float32",  # before and after are compared to the 4th decimal: no half-precision noise
            device=device,
        )
    except (TeacherConfigError, OSError) as error:
        raise ConfigError(f"cannot score {model_name_or_path} as a {kind}: {str(error).rstrip('.')}.") from None


def load_base_scorer(
    kind: str,
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
    from transformers.utils import logging as hf_logging

    from .model_loading import ModelArguments, load_student

    if kind == "reranker" and _is_causal_lm_checkpoint(model_name_or_path):
        if num_hidden_layers is not None:
            raise ConfigError("--num_hidden_layers is not supported for a causal-LM base reranker. Fix: drop it.")
        return load_scorer(kind, model_name_or_path, max_length=max_length, device=device, instruction=instruction)
    torch.manual_seed(seed)
    # Cutting layers makes transformers list every dropped weight as "unexpected"; that is the point, not news.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model, _ = load_student(kind, ModelArguments(model_name_or_path, num_hidden_layers=num_hidden_layers))
    except OSError as error:
        raise ConfigError(f"cannot load the base model {model_name_or_path}: {str(error).rstrip('.')}.") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    return load_scorer(
        kind, model_name_or_path, model=model, pooling=pooling, max_length=max_length, device=device,
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


def has_agreement(*metrics: dict[str, Any] | None) -> bool:
    """Whether any of ``metrics`` has an agreement entry (``spearman``/``kendall``, even NaN)."""
    return any(key in m for m in metrics if m for key in AGREEMENT_KEYS)


def split_teacher(metrics: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Split ``compute_ranking_metrics`` output into the model's metrics and the teacher's (``teacher_`` removed)."""
    teacher = {key.removeprefix("teacher_"): v for key, v in metrics.items() if key.startswith("teacher_")}
    model = {key: v for key, v in metrics.items() if not key.startswith("teacher_")}
    return model, teacher or None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def metric_change(before: dict[str, Any], after: dict[str, Any], keys: Sequence[str] | None = None) -> dict:
    """``{metric: {"absolute": after - before, "relative": (after - before) / |before|}}`` for every metric both
    have; ``relative`` is ``None`` when ``before`` is 0."""
    change = {}
    for key in keys or (*RANKING_KEYS, *AGREEMENT_KEYS):
        old, new = before.get(key), after.get(key)
        if _is_number(old) and _is_number(new):
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


# ---------------------------------------------------------------------------------------------------------
# Reports: Markdown, JSON, chart
# ---------------------------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    return f"{value:.4f}" if _is_number(value) else _MISSING


def _change_cell(change: dict[str, Any] | None) -> str:
    if not change:
        return _MISSING
    text = f"{change['absolute']:+.4f}"
    return text if change["relative"] is None else f"{text} ({change['relative']:+.1%})"


def markdown_table(
    teacher: dict[str, Any] | None,
    before: dict[str, Any] | None,
    after: dict[str, Any],
    before_label: str = "base (before)",
    after_label: str = "student (after)",
    agreement: bool | None = None,
) -> str:
    """One eval set as a Markdown table: a row each for the teacher, before and after (those given), and the change
    from before to after, absolute and relative; columns MAP, MRR@10, NDCG@10, Spearman and Kendall vs teacher.

    ``agreement``: show the Spearman and Kendall columns; default: when ``before`` or ``after`` has them (an eval
    set without teacher scores has none, and a column of dashes would only say so less clearly).
    """
    if agreement is None:
        agreement = has_agreement(before, after)
    keys = [key for key in COLUMN_TITLES if agreement or key not in AGREEMENT_KEYS]
    lines = [
        "| | " + " | ".join(COLUMN_TITLES[key] for key in keys) + " |",
        "|---|" + "---:|" * len(keys),
    ]
    if teacher:  # agreement of the teacher with itself says nothing
        cells = [_cell(teacher.get(key)) if key in RANKING_KEYS else _MISSING for key in keys]
        lines.append("| teacher | " + " | ".join(cells) + " |")
    rows = [(before_label, before), (after_label, after)] if before is not None else [(after_label, after)]
    for label, metrics in rows:
        lines.append(f"| {label} | " + " | ".join(_cell(metrics.get(key)) for key in keys) + " |")
    if before is not None:
        change = metric_change(before, after, keys)
        lines.append("| change | " + " | ".join(_change_cell(change.get(key)) for key in keys) + " |")
    return "\n".join(lines) + "\n"


def render_markdown(results: dict[str, dict[str, Any]], models: dict[str, Any]) -> str:
    """The whole report: which models, then one table per eval set."""
    lines = [f"# Evaluation of `{models['student']}`\n"]
    lines.append(f"- student (after): `{models['student']}` ({models['student_kind']})")
    if models.get("base"):
        layers = models.get("base_num_hidden_layers")
        cut = f", first {layers} layers" if layers else ""
        head = f"; a missing reranker head is drawn after torch.manual_seed({models['seed']})"
        lines.append(f"- base (before): `{models['base']}`{cut}{head if models['student_kind'] == 'reranker' else ''}")
    scored = [result.get("has_teacher_scores", True) for result in results.values()]
    teacher = "the scores in each eval file" if all(scored) else "the scores in the eval files that have them"
    lines.append(f"- teacher: {teacher if any(scored) else 'no eval file has teacher scores'}\n")
    for name, result in results.items():
        queries = (result["student"] or {}).get("num_queries")
        where = f"`{result['file']}`, " if result.get("file") else ""
        counted = f"{queries} of {result['num_groups']} queries scored" if queries is not None else "no labels"
        lines.append(f"## {name} ({where}{counted})\n")
        if not result.get("has_teacher_scores", True):
            lines.append(f"_{NO_TEACHER_NOTE.format(where='this file')}._\n")
        lines.append(markdown_table(result["teacher"], result["base"], result["student"]))
    return "\n".join(lines)


def save_chart(results: dict[str, dict[str, Any]], path: str | Path) -> Path:
    """Grouped bars, one panel per eval set: MAP, MRR@10 and NDCG@10 of the teacher, base and student."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1.5 + 4.0 * len(results), 4.0), layout="constrained")
    FigureCanvasAgg(fig)  # Agg, without pyplot: no global backend state, no display needed
    axes = fig.subplots(1, len(results), sharey=True, squeeze=False)[0]
    positions = np.arange(len(RANKING_KEYS))
    legend = {}  # one entry per row drawn in any panel
    for ax, (name, result) in zip(axes, results.items()):
        rows = [row for row in ROWS if result.get(row)]
        width = 0.8 / len(rows)
        for i, row in enumerate(rows):
            values = [result[row].get(key) for key in RANKING_KEYS]
            heights = [value if _is_number(value) else 0.0 for value in values]
            offset = (i - (len(rows) - 1) / 2) * width
            bars = legend[row] = ax.bar(positions + offset, heights, width, color=_ROW_COLOURS[row])
            ax.bar_label(bars, labels=[f"{v:.2f}" if _is_number(v) else "" for v in values], fontsize=7)
        ax.set_xticks(positions, [COLUMN_TITLES[key] for key in RANKING_KEYS])
        ax.set_title(name)
        ax.set_ylim(0, 1.08)
    axes[0].set_ylabel("score")
    rows = [row for row in ROWS if row in legend]
    fig.legend([legend[row] for row in rows], [_ROW_LEGEND[row] for row in rows], loc="outside right upper")
    fig.savefig(path, dpi=120)
    return Path(path)


def _json_safe(value: Any) -> Any:
    """NaN and infinities as ``null``: JSON has no NaN, and other tools refuse Python's non-standard ``NaN``."""
    if isinstance(value, dict):
        return {key: _json_safe(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_reports(results: dict[str, dict[str, Any]], models: dict[str, Any], output_dir: str | Path) -> str:
    """Write ``metrics.json``, ``metrics.md`` and ``metrics.png`` into ``output_dir``; returns the Markdown.

    The chart needs matplotlib (the ``plot`` extra); without it the chart is skipped with one log line and the
    rest is written as usual.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    report = {"models": models, "k": K, "eval_sets": results}
    (output_dir / "metrics.json").write_text(
        json.dumps(_json_safe(report), indent=2, allow_nan=False) + "\n", encoding="utf-8"
    )
    markdown = render_markdown(results, models)
    (output_dir / "metrics.md").write_text(markdown, encoding="utf-8")
    try:
        save_chart(results, output_dir / "metrics.png")
    except ModuleNotFoundError as error:
        if (error.name or "").partition(".")[0] != "matplotlib":
            raise  # a missing module of ours or of a dependency is a real error, not the optional extra
        logger.warning(CHART_SKIPPED)
    return markdown
