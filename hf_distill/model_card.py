"""The model card of a distilled student: ``README.md``, from the :class:`~hf_distill.reports.DistillationReport`.

:func:`write_model_card` writes it: base model, teacher, loss and options, data, a before/after table per eval set
(the tables of :func:`hf_distill.reports.markdown_table`), the command, and how to load the student. The layout is
package data under ``templates/``: ``model_card.md``, and the usage section per task, ``usage_reranker.md`` and
``usage_embedding.md``, each a :class:`string.Template`.

**No local paths.** The card may go public (:func:`hf_distill.hub.push_student`), the report keeps the run's full
paths: local models and data are named by their Hub id or file name (:func:`public_name`), and the command's paths
are made relative to the working directory or cut to their name (:func:`public_command`).
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import shlex
import string
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from .evaluation import split_teacher
from .kinds import Task
from .reports import NO_TEACHER_NOTE, DistillationReport, has_agreement, markdown_table
from .st_format import read_sentence_transformers_config

_DATA_FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".tsv", ".txt", ".gz", ".arrow")
# The Hub client's cache keeps a repo in ``<cache>/models--<org>--<name>/snapshots/<commit>/``; repo ids cannot
# contain ``--`` (validate_repo_id), so the folder name gives the id back exactly.
_HUB_CACHE_FOLDER = re.compile(r"^(?:models|datasets)--(?P<repo>.+)$")
_SIGNIFICANT_DIGITS = 4

# ---------------------------------------------------------------------------------------------------------
# Public names: what the card calls a model, a data file, a path
# ---------------------------------------------------------------------------------------------------------


def _hub_id(name: str | None) -> str | None:
    """``name`` if it can be a Hub repo id (the Hub rejects card metadata naming anything else), else ``None``."""
    from huggingface_hub.utils import validate_repo_id

    if not name or _is_local(name) or name.lower().endswith(_DATA_FILE_SUFFIXES):
        return None
    try:
        validate_repo_id(name)
    except ValueError:  # HFValidationError
        return None
    return name


def _is_local(name: str) -> bool:
    """A path on this machine, or an absolute one from the machine the run was on (the report may travel)."""
    return os.path.isabs(name) or name.startswith("~") or os.path.exists(name)


class PublicName(NamedTuple):
    """How the card names a model or data source that may be a local path."""

    shown: str  # what the card prints: a Hub id, or a file/folder name, never a full local path
    hub_id: str | None  # for the card's metadata: set only when the Hub id is certain
    short: str  # the name without its owner, for the title
    from_config: bool = False  # ``shown`` is the id a local checkpoint's config.json records


def public_name(name: str) -> PublicName:
    """Name ``name`` (a Hub id or a local path) in a card without exposing the local file layout.

    A Hub id is kept. A local path becomes, in order: the repo id of a Hub client cache folder
    (``.../models--org--name/snapshots/<commit>``); the Hub id its ``config.json`` records in ``_name_or_path``
    (transformers 4 saves; shown with a note but kept out of the metadata: it can be the model that checkpoint was
    itself fine-tuned from, as all-MiniLM-L6-v2's records ``nreimers/MiniLM-L6-H384-uncased``); else its file or
    folder name.
    """
    if not _is_local(name):
        return PublicName(name, _hub_id(name), name.rstrip("/").rsplit("/", 1)[-1])
    path = Path(os.path.expanduser(name))
    cached = _hub_cache_repo(path)
    if cached:
        return PublicName(cached, cached, cached.rsplit("/", 1)[-1])
    recorded = _recorded_hub_id(path)
    if recorded:
        return PublicName(recorded, None, recorded.rsplit("/", 1)[-1], from_config=True)
    return PublicName(path.name or name, None, path.name or name)


def _hub_cache_repo(path: Path) -> str | None:
    parts = path.parts
    for i in range(1, len(parts) - 1):
        match = _HUB_CACHE_FOLDER.match(parts[i - 1])
        if parts[i] == "snapshots" and match:
            return _hub_id(match["repo"].replace("--", "/"))
    return None


def _recorded_hub_id(path: Path) -> str | None:
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):  # not a checkpoint folder (a data file, a missing path): nothing recorded
        return None
    recorded = config.get("_name_or_path") if isinstance(config, dict) else None
    return _hub_id(recorded) if isinstance(recorded, str) else None


def public_path(value: str) -> tuple[str, bool] | None:
    """``value`` relative to the working directory when it is a local path under it, else its base name (second
    item ``True``); ``None`` when ``value`` is not an absolute (or ``~``) path."""
    if not (os.path.isabs(value) or value.startswith("~")):
        return None
    absolute = os.path.abspath(os.path.expanduser(value))
    cwd = os.getcwd()
    for here, there in ((cwd, absolute), (os.path.realpath(cwd), os.path.realpath(absolute))):
        if os.path.commonpath([here, there]) == here:
            return os.path.relpath(there, here), False
    return os.path.basename(absolute.rstrip(os.sep)) or value, True


def public_command(command: str) -> tuple[str, list[str]]:
    """The command with its paths made public (:func:`public_path`, also in ``--flag=value``), and the base names
    that stand for paths outside the working directory."""
    try:
        args = shlex.split(command)
    except ValueError:  # unbalanced quotes (a hand-edited report): still hide the paths, word by word
        args = command.split()
    shown, outside = [], []
    for arg in args:
        flag, equals, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
        if not equals:
            flag, value = "", arg
        public = public_path(value)
        if public is None:
            shown.append(arg)
            continue
        shown.append(flag + equals + public[0])
        if public[1] and public[0] not in outside:
            outside.append(public[0])
    return shlex.join(shown), outside


def _shown(name: str | None) -> str | None:
    """``name`` as the card prints it (:func:`public_name`), in backticks; ``None`` when not recorded."""
    return f"`{public_name(name).shown}`" if name else None


def _recorded_note(name: str | None) -> str | None:
    """Where a shown id came from when it is not certain (see :func:`public_name`), else ``None``."""
    return "id as recorded in the local checkpoint's config.json" if name and public_name(name).from_config else None


# ---------------------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------------------


def _format_number(value: Any) -> str:
    """Floats to 4 significant digits (an "auto" temperature is resolved to 17); anything else as it is."""
    if isinstance(value, float):
        return repr(float(f"{value:.{_SIGNIFICANT_DIGITS}g}"))
    return str(value)


def _format_options(options: dict[str, Any] | None) -> str:
    shown = {key: value for key, value in (options or {}).items() if value is not None}
    return ", ".join(f"{key}={_format_number(value)}" for key, value in shown.items())


def _format_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _training_rows(report: DistillationReport) -> list[tuple[str, str]]:
    """The rows of the card's training table; a missing piece is left out or said in words, never ``None``."""
    layers = report.num_hidden_layers
    notes = [f"its first {layers} transformer layers" if layers else None, _recorded_note(report.base_model)]
    base = _shown(report.base_model) or "not recorded"
    base += f" ({'; '.join(note for note in notes if note)})" if any(notes) else ""
    teacher = _shown(report.teacher)
    if teacher and _recorded_note(report.teacher):
        teacher += f" ({_recorded_note(report.teacher)})"
    loss = f"`{report.loss}`" if report.loss else "not recorded"
    options = _format_options(report.loss_options)
    if options:
        loss += f" ({options})"
    if report.hard_label_weight:
        loss += f" + {_format_number(report.hard_label_weight)} x hard-label loss"
    rows = [
        ("Student initialised from", base),
        ("Teacher", teacher or "not recorded (pass `--teacher_model_name_or_path` to the recipe)"),
        ("Distillation loss", loss),
        ("Training data", _shown(report.train_data) or "not recorded"),
    ]
    if report.group_size:
        rows.append(("Candidates per query", str(report.group_size)))
    if report.learning_rate is not None:
        rows.append(("Learning rate", f"{report.learning_rate:g}"))
    max_steps = report.max_steps
    if max_steps is not None and max_steps > 0:
        rows.append(("Training length", f"{max_steps} steps"))
    elif report.num_train_epochs is not None:
        rows.append(("Training length", f"{report.num_train_epochs:g} epochs"))
    if report.train_runtime_s:
        rows.append(("Training time", _format_duration(report.train_runtime_s)))
    lora = report.lora
    if lora:
        targets = lora.get("lora_target_modules")
        rows.append(
            (
                "LoRA",
                f"r={lora.get('lora_r')}, alpha={lora.get('lora_alpha')}, dropout={lora.get('lora_dropout')}"
                + (f", modules {', '.join(targets)}" if targets else "")
                + "; merged into these weights (the adapter alone is in `lora_adapter/`)",
            )
        )
    return rows


def _evaluation_section(report: DistillationReport) -> str:
    before_all, after_all = report.metrics_before or {}, report.metrics_after or {}
    if not after_all:
        return (
            "No evaluation set was given for this run. Pass `--eval_file` to the recipe (or run "
            "`recipes/evaluate.py`) to measure MAP, MRR@10 and NDCG@10 before and after distillation.\n"
        )
    parts = [
        "MAP (full list), MRR@10 and NDCG@10 with binary relevance, as sentence-transformers' reranking evaluators "
        "compute them; Spearman and Kendall: mean per-query rank correlation of the student's scores with the "
        "teacher's. The teacher row is the teacher's own ranking of the same candidates (the ceiling of a perfect "
        "imitation). Both need teacher scores in the eval set. Change: after minus before, and relative to before.\n"
    ]
    for name, after in after_all.items():
        model_after, teacher = split_teacher(after)
        before = before_all.get(name)
        model_before = split_teacher(before)[0] if before else None
        queries = model_after.get("num_queries")
        counted = isinstance(queries, (int, float)) and math.isfinite(queries)  # NaN / null in a report: unsaid
        shown_queries = f" ({queries:g} queries)" if counted else ""
        parts.append(f"### {name}{shown_queries}\n")
        if teacher is None and not has_agreement(model_before, model_after):
            parts.append(f"_{NO_TEACHER_NOTE.format(where='this eval set')}._\n")
        parts.append(
            markdown_table(
                teacher, model_before, model_after, before_label="before distillation", after_label="after distillation"
            )
        )
    return "\n".join(parts)


# How an embedding student's declared pooling reads in the transformers-only example (right padding for "last").
_POOLED = {
    "cls": "hidden[:, 0]",
    "mean": "(hidden * mask).sum(1) / mask.sum(1)",
    "last": "hidden[torch.arange(len(hidden)), features['attention_mask'].sum(1) - 1]",
}


def _usage_section(task: Task, model_id: str, output_dir: str) -> str:
    """``templates/usage_<task>.md`` filled in: how to load ``model_id`` with sentence-transformers and with
    transformers alone; an embedding student's pooling and prompts are read from ``output_dir``."""
    if task == "reranker":
        return _template("usage_reranker.md").substitute(model_id=model_id)
    pooling, query_prefix, passage_prefix = _student_embedding_config(output_dir)
    add_query, add_passage = (f"{prefix!r} + " if prefix else "" for prefix in (query_prefix, passage_prefix))
    prompts = (
        f" Its prompts (`{query_prefix}` before queries, `{passage_prefix}` before passages) are applied by "
        "`encode_query` / `encode_document` and must be added by hand with transformers."
        if query_prefix or passage_prefix
        else ""
    )
    return _template("usage_embedding.md").substitute(
        model_id=model_id,
        pooling=pooling,
        prompts=prompts,
        pooled=_POOLED[pooling],
        add_query=add_query,
        add_passage=add_passage,
    )


def _student_embedding_config(output_dir: str) -> tuple[str, str, str]:
    """Pooling, query prompt and passage prompt the saved embedding student declares (mean and none by default)."""
    try:
        info = read_sentence_transformers_config(output_dir) or {}
    except (OSError, ValueError):  # an unreadable or unsupported declaration: the card falls back to mean
        info = {}
    prompts = info.get("prompts") or {}
    return info.get("pooling") or "mean", prompts.get("query") or "", prompts.get("document") or ""


@functools.cache
def _template(name: str) -> string.Template:
    """``templates/<name>`` (package data): a layout filled by :func:`render_model_card`."""
    text = resources.files(__package__).joinpath("templates", name).read_text(encoding="utf-8")
    return string.Template(text)


def _title(report: DistillationReport, repo_id: str | None) -> str:
    if repo_id:
        return repo_id.rsplit("/", 1)[-1]
    kind = "Reranker" if report.student_kind == "reranker" else "Embedding model"
    base = public_name(report.base_model).short if report.base_model else kind
    teacher = public_name(report.teacher).short if report.teacher else "teacher scores"
    return f"{base} distilled from {teacher}"


def _reproduce_section(command: str | None) -> str:
    if not command:
        return "The command was not recorded."
    shown, outside = public_command(command)
    text = f"```bash\n{shown}\n```"
    if outside:
        names = ", ".join(f"`{name}`" for name in outside)
        text += (
            f"\n\nPaths are relative to the directory the run started in; those outside it are shown by their "
            f"name only ({names}): put your own copies in their place."
        )
    return text


# ---------------------------------------------------------------------------------------------------------
# The card
# ---------------------------------------------------------------------------------------------------------


def render_model_card(
    report: DistillationReport, model_id: str, output_dir: str = ".", repo_id: str | None = None
) -> str:
    """The text of the model card for ``report`` (see :func:`write_model_card`).

    Args:
        report: as for :func:`write_model_card`.
        model_id: what the usage examples load: the Hub repo id, or the local folder before a push (an absolute
            path is shown relative to the working directory, or by its name).
        output_dir: the saved student, read for an embedding model's pooling and prompts.
        repo_id: the Hub repo the card is for; its name is the card's title (default: base and teacher names).

    Raises:
        ValueError: ``report.student_kind`` is neither ``reranker`` nor ``embedding``.
    """
    task = report.student_kind
    if task not in ("reranker", "embedding"):
        raise ValueError(f"report['student_kind'] is {task!r}, expected 'reranker' or 'embedding'.")
    library_tag = "cross-encoder" if task == "reranker" else "sentence-transformers"
    base_model = public_name(report.base_model) if report.base_model else None
    train_data = public_name(report.train_data) if report.train_data else None
    metadata: dict[str, Any] = {
        # sentence-transformers loads both kinds (CrossEncoder / SentenceTransformer); the Hub shows its snippet.
        "library_name": "sentence-transformers",
        "pipeline_tag": "text-ranking" if task == "reranker" else "sentence-similarity",
        "base_model": base_model.hub_id if base_model else None,
        "tags": ["hf_distill", "distillation", task, library_tag],
        "datasets": [train_data.hub_id] if train_data and train_data.hub_id else None,
    }
    front_matter = yaml.safe_dump({k: v for k, v in metadata.items() if v is not None}, sort_keys=False).strip()
    teacher = _shown(report.teacher)
    what = "cross-encoder reranker" if task == "reranker" else "embedding model"
    intro = f"A {what} distilled with hf_distill from " + (f"the teacher {teacher}" if teacher else "teacher scores")
    intro += f" into {_shown(report.base_model)}." if report.base_model else "."
    training = "\n".join(["| | |", "|---|---|", *(f"| {name} | {value} |" for name, value in _training_rows(report))])
    public_model_id = public_path(model_id)
    return (
        _template("model_card.md")
        .substitute(
            front_matter=front_matter,
            title=_title(report, repo_id),
            intro=intro,
            training=training,
            evaluation=_evaluation_section(report).rstrip("\n"),
            reproduce=_reproduce_section(report.command),
            usage=_usage_section(task, public_model_id[0] if public_model_id else model_id, output_dir).rstrip("\n"),
        )
        .rstrip("\n")
        + "\n"
    )


def write_model_card(output_dir: str | os.PathLike, report: DistillationReport, repo_id: str | None = None) -> str:
    """Write ``output_dir/README.md``, a Hub model card for the distilled student, and return its text.

    The card shows no local absolute path: local models and data are named by their Hub id or file name
    (:func:`public_name`), the command's paths are made relative or cut to their name (:func:`public_command`).
    ``report`` itself is not changed (``distillation_report.json`` keeps the full paths).

    Args:
        output_dir: the saved student.
        report: what :func:`hf_distill.recipe.run_distillation` records (or :meth:`DistillationReport.load` reads
            back): the task, base model, teacher, loss, metrics before/after per eval set, command, ... Missing
            entries (no teacher, no eval set) are said in words.
        repo_id: the Hub repo: the card's title and what the usage examples load; default: titled after the base
            and teacher, loading ``output_dir`` (:func:`hf_distill.hub.push_student` rewrites the card with its
            repo id).
    """
    output_dir = os.fspath(output_dir)
    text = render_model_card(report, repo_id or output_dir, output_dir, repo_id=repo_id)
    Path(output_dir, "README.md").write_text(text, encoding="utf-8")
    return text
