"""What a run reports, and how it is shown: the distillation report, and the evaluation's Markdown, JSON and chart.

* :class:`DistillationReport`: what :func:`hf_distill.recipe.run_distillation` records about one run, saved as
  ``distillation_report.json`` next to the student (:meth:`DistillationReport.save`) and read back by the model
  card (:mod:`hf_distill.model_card`) and the push (:meth:`DistillationReport.load`).
* :func:`write_reports`: ``metrics.json``, ``metrics.md`` and ``metrics.png`` of ``recipes/evaluate.py`` from the
  results of :func:`hf_distill.evaluation.evaluate_eval_sets`. The model card renders its tables with the same
  :func:`markdown_table`, so both read the same.

The numbers come from :mod:`hf_distill.evaluation` (scoring and measuring); this module only arranges them.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from .evaluation import AGREEMENT_KEYS, RANKING_KEYS, K, is_number, metric_change
from .kinds import Task

logger = logging.getLogger("hf_distill")

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
# The distillation report
# ---------------------------------------------------------------------------------------------------------

REPORT_FILE = "distillation_report.json"


@dataclass
class DistillationReport:
    """One distillation run as :func:`hf_distill.recipe.run_distillation` records it (``distillation_report.json``).

    :meth:`to_dict` is the file's content, key for key in this order; :meth:`from_dict` reads such a file back,
    and also a hand-made or older one: a missing entry takes its default (``None``: not recorded), an unknown one
    is ignored. The model card says a missing entry in words.
    """

    student_kind: Task = "reranker"  # the task: reranker or embedding
    base_model: str | None = None  # the checkpoint the student was initialised from (--model_name_or_path)
    num_hidden_layers: int | None = None  # only the base's first N layers were kept
    teacher: str | None = None  # the model that scored the training data (--teacher_model_name_or_path)
    train_data: str | None = None  # --dataset_name, else --train_file
    loss: str | None = None
    # As used: "auto" temperatures resolved by the trainer (from the training scores / the student type).
    loss_options: dict[str, Any] = field(default_factory=dict)
    hard_label_weight: float | None = None
    group_size: int | None = None
    learning_rate: float | None = None
    num_train_epochs: float | None = None
    max_steps: int | None = None
    train_runtime_s: float | None = None
    world_size: int | None = None
    distributed_type: str | None = None  # NO, MULTI_GPU, MULTI_CPU, DEEPSPEED, FSDP
    dropout: str | None = None
    precision: str | None = None  # no, bf16 or fp16: what the forward ran in
    instruction: str | None = None
    query_prefix: str | None = None
    eval_files: dict[str, str] = field(default_factory=dict)  # eval set name -> file
    # Per eval set, the Trainer's metrics (``map``, ``mrr@10``, ..., ``teacher_map``, ...) before and after training.
    metrics_before: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics_after: dict[str, dict[str, Any]] = field(default_factory=dict)
    command: str | None = None  # the command line of the run, as typed
    lora: dict[str, Any] | None = None  # the ModelArguments of a LoRA run; None for full fine-tuning
    # "<ExceptionType>: <message>" when the final evaluation failed; not in the file otherwise.
    evaluation_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The content of ``distillation_report.json``: every field in order, ``evaluation_error`` only when set."""
        data = asdict(self)
        if data["evaluation_error"] is None:
            del data["evaluation_error"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DistillationReport:
        """A report from the content of a ``distillation_report.json`` (see the class docstring)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a distillation report is a JSON object, got {type(data).__name__}.")
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})

    @classmethod
    def load(cls, path: str | os.PathLike) -> DistillationReport:
        """Read ``path``: a ``distillation_report.json`` file, or the folder of a run that holds one."""
        path = Path(path)
        if path.is_dir():
            path = path / REPORT_FILE
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))

    def save(self, output_dir: str | os.PathLike) -> Path:
        """Write ``output_dir/distillation_report.json`` (:meth:`to_dict`, indented by 2); returns its path."""
        path = Path(output_dir, REPORT_FILE)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2)
        return path


# ---------------------------------------------------------------------------------------------------------
# Evaluation reports: Markdown, JSON, chart
# ---------------------------------------------------------------------------------------------------------


def has_agreement(*metrics: dict[str, Any] | None) -> bool:
    """Whether any of ``metrics`` has an agreement entry (``spearman``/``kendall``, even NaN)."""
    return any(key in m for m in metrics if m for key in AGREEMENT_KEYS)


def _cell(value: Any) -> str:
    return f"{value:.4f}" if is_number(value) else _MISSING


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
            heights = [value if is_number(value) else 0.0 for value in values]
            offset = (i - (len(rows) - 1) / 2) * width
            bars = legend[row] = ax.bar(positions + offset, heights, width, color=_ROW_COLOURS[row])
            ax.bar_label(bars, labels=[f"{v:.2f}" if is_number(v) else "" for v in values], fontsize=7)
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
