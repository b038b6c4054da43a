"""Publishing a distilled student: its model card, and the push of the student or of a scored data file to the Hub.

* :func:`write_model_card` writes ``README.md`` from the report :func:`hf_distill.recipe.run_distillation` builds:
  base model, teacher, loss and options, data, a before/after table per eval set, the command, and how to load it.
* :func:`push_student` uploads a saved student folder; :func:`push_scored_dataset` a teacher-scored JSONL file
  (``recipes/score_teacher.py --push_to_hub``).

**What a student push uploads.** Everything in the folder except ``checkpoint-*/``: Trainer checkpoints hold the
optimizer and scheduler state for resuming *here* (several times the model's size) and nothing a user of the model
needs. Kept on purpose: ``lora_adapter/`` (a LoRA run's adapter, a few MB, for those who want the adapter rather
than the merged weights), ``training_args.bin`` (the Trainer pushes it too; the exact arguments of the run) and
``distillation_report.json`` (the numbers behind the card).

**Tokens.** A token goes to ``huggingface_hub`` and nowhere else: it is never logged, and a failed push raises
:class:`HubPushError` whose message has every token removed and no chained exception (an HTTP error can carry the
request). A failed push leaves the local folder as it was; rerun the push alone with :func:`push_student`.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
import shlex
import string
from importlib import resources
from pathlib import Path
from typing import Any, Callable, NamedTuple, TypeVar

import yaml

from .cli import ConfigError
from .evaluation import NO_TEACHER_NOTE, has_agreement, markdown_table, split_teacher

logger = logging.getLogger("hf_distill")

# Patterns in huggingface_hub's sense: fnmatch on the path relative to the folder, ``*`` also matches ``/``.
STUDENT_IGNORE_PATTERNS = ["checkpoint-*"]

_DATA_FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".tsv", ".txt", ".gz", ".arrow")
# Access tokens look like hf_ + 30-odd letters; scrubbed from error messages even when they are not ours.
_TOKEN_PATTERN = re.compile(r"hf_[A-Za-z0-9]{16,}")

# The Hub client's cache keeps a repo in ``<cache>/models--<org>--<name>/snapshots/<commit>/``; repo ids cannot
# contain ``--`` (validate_repo_id), so the folder name gives the id back exactly.
_HUB_CACHE_FOLDER = re.compile(r"^(?:models|datasets)--(?P<repo>.+)$")
_SIGNIFICANT_DIGITS = 4

T = TypeVar("T")


class HubPushError(ConfigError):
    """A push to the Hub failed (network, login, permissions, repo name); the local files are unchanged.

    A :class:`~hf_distill.cli.ConfigError`, so a recipe wrapped in ``exit_on_user_error`` ends with this one line
    and exit status 2 instead of a traceback.
    """


# ---------------------------------------------------------------------------------------------------------
# Model card
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


def _shown(name: str | None) -> str | None:
    """``name`` as the card prints it (:func:`public_name`), in backticks; ``None`` when not recorded."""
    return f"`{public_name(name).shown}`" if name else None


def _recorded_note(name: str | None) -> str | None:
    """Where a shown id came from when it is not certain (see :func:`public_name`), else ``None``."""
    return "id as recorded in the local checkpoint's config.json" if name and public_name(name).from_config else None


def _training_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    """The rows of the card's training table; a missing piece is left out or said in words, never ``None``."""
    layers = report.get("num_hidden_layers")
    notes = [f"its first {layers} transformer layers" if layers else None, _recorded_note(report.get("base_model"))]
    base = _shown(report.get("base_model")) or "not recorded"
    base += f" ({'; '.join(note for note in notes if note)})" if any(notes) else ""
    teacher = _shown(report.get("teacher"))
    if teacher and _recorded_note(report.get("teacher")):
        teacher += f" ({_recorded_note(report.get('teacher'))})"
    loss = f"`{report['loss']}`" if report.get("loss") else "not recorded"
    options = _format_options(report.get("loss_options"))
    if options:
        loss += f" ({options})"
    if report.get("hard_label_weight"):
        loss += f" + {_format_number(report['hard_label_weight'])} x hard-label loss"
    rows = [
        ("Student initialised from", base),
        ("Teacher", teacher or "not recorded (pass `--teacher_model_name_or_path` to the recipe)"),
        ("Distillation loss", loss),
        ("Training data", _shown(report.get("train_data")) or "not recorded"),
    ]
    if report.get("group_size"):
        rows.append(("Candidates per query", str(report["group_size"])))
    if report.get("learning_rate") is not None:
        rows.append(("Learning rate", f"{report['learning_rate']:g}"))
    max_steps = report.get("max_steps")
    if max_steps is not None and max_steps > 0:
        rows.append(("Training length", f"{max_steps} steps"))
    elif report.get("num_train_epochs") is not None:
        rows.append(("Training length", f"{report['num_train_epochs']:g} epochs"))
    if report.get("train_runtime_s"):
        rows.append(("Training time", _format_duration(report["train_runtime_s"])))
    lora = report.get("lora")
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


def _evaluation_section(report: dict[str, Any]) -> str:
    before_all, after_all = report.get("metrics_before") or {}, report.get("metrics_after") or {}
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


def _usage_section(kind: str, model_id: str, output_dir: str) -> str:
    if kind == "reranker":
        return f"""A plain `AutoModelForSequenceClassification` checkpoint with one output: the relevance logit.

```python
from sentence_transformers import CrossEncoder

model = CrossEncoder("{model_id}")
query = "how do I list the files in a directory?"
passages = ["ls lists directory contents.", "cp copies files and directories."]
scores = model.predict([(query, passage) for passage in passages])  # sigmoid of the logit: same ranking
ranking = model.rank(query, passages)  # [{{'corpus_id': ..., 'score': ...}}, ...], best first
```

With transformers alone (the raw logit, the score the student was trained on):

```python
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{model_id}")
model = AutoModelForSequenceClassification.from_pretrained("{model_id}").eval()
features = tokenizer([query] * len(passages), passages, padding=True, truncation=True, return_tensors="pt")
with torch.no_grad():
    scores = model(**features).logits.squeeze(-1)
```
"""
    pooling, query_prefix, passage_prefix = _student_embedding_config(output_dir)
    pooled = {
        "cls": "hidden[:, 0]",
        "mean": "(hidden * mask).sum(1) / mask.sum(1)",
        "last": "hidden[torch.arange(len(hidden)), features['attention_mask'].sum(1) - 1]",  # right padding
    }[pooling]
    add_query, add_passage = (f"{prefix!r} + " if prefix else "" for prefix in (query_prefix, passage_prefix))
    prompts = (
        f" Its prompts (`{query_prefix}` before queries, `{passage_prefix}` before passages) are applied by "
        "`encode_query` / `encode_document` and must be added by hand with transformers."
        if query_prefix or passage_prefix
        else ""
    )
    return f"""A sentence-transformers checkpoint ({pooling} pooling): embed queries and passages separately, compare by
cosine similarity.{prompts}

```python
from sentence_transformers import SentenceTransformer

model = SentenceTransformer("{model_id}")
query_embeddings = model.encode_query(["how do I list the files in a directory?"])  # model.encode + query prompt
passage_embeddings = model.encode_document(["ls lists directory contents.", "cp copies files and directories."])
scores = model.similarity(query_embeddings, passage_embeddings)  # cosine, [1, 2]
```

With transformers alone:

```python
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{model_id}")
model = AutoModel.from_pretrained("{model_id}").eval()


def embed(texts):
    features = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**features).last_hidden_state
    mask = features["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return F.normalize({pooled}, dim=-1)


scores = embed([{add_query}"how do I list the files in a directory?"]) @ embed(
    [{add_passage}"ls lists directory contents.", {add_passage}"cp copies files and directories."]
).T
```
"""


def _student_embedding_config(output_dir: str) -> tuple[str, str, str]:
    """Pooling, query prompt and passage prompt the saved embedding student declares (mean and none by default)."""
    from .teachers import TeacherConfigError, read_sentence_transformers_config

    try:
        info = read_sentence_transformers_config(output_dir) or {}
    except (TeacherConfigError, OSError, ValueError):
        info = {}
    prompts = info.get("prompts") or {}
    return info.get("pooling") or "mean", prompts.get("query") or "", prompts.get("document") or ""


@functools.cache
def _card_template() -> string.Template:
    """``templates/model_card.md`` (package data): the card's layout, filled by :func:`render_model_card`."""
    text = resources.files(__package__).joinpath("templates", "model_card.md").read_text(encoding="utf-8")
    return string.Template(text)


def _title(report: dict[str, Any], repo_id: str | None) -> str:
    if repo_id:
        return repo_id.rsplit("/", 1)[-1]
    kind = "Reranker" if report.get("student_kind", "reranker") == "reranker" else "Embedding model"
    base = public_name(report["base_model"]).short if report.get("base_model") else kind
    teacher = public_name(report["teacher"]).short if report.get("teacher") else "teacher scores"
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


def render_model_card(
    report: dict[str, Any], model_id: str, output_dir: str = ".", repo_id: str | None = None
) -> str:
    """The text of the model card for ``report`` (see :func:`write_model_card`).

    Args:
        report: as for :func:`write_model_card`.
        model_id: what the usage examples load: the Hub repo id, or the local folder before a push (an absolute
            path is shown relative to the working directory, or by its name).
        output_dir: the saved student, read for an embedding model's pooling and prompts.
        repo_id: the Hub repo the card is for; its name is the card's title (default: base and teacher names).
    """
    kind = report.get("student_kind", "reranker")
    if kind not in ("reranker", "embedding"):
        raise ValueError(f"report['student_kind'] is {kind!r}, expected 'reranker' or 'embedding'.")
    library_tag = "cross-encoder" if kind == "reranker" else "sentence-transformers"
    base_model = public_name(report["base_model"]) if report.get("base_model") else None
    train_data = public_name(report["train_data"]) if report.get("train_data") else None
    metadata: dict[str, Any] = {
        # sentence-transformers loads both kinds (CrossEncoder / SentenceTransformer); the Hub shows its snippet.
        "library_name": "sentence-transformers",
        "pipeline_tag": "text-ranking" if kind == "reranker" else "sentence-similarity",
        "base_model": base_model.hub_id if base_model else None,
        "tags": ["hf_distill", "distillation", kind, library_tag],
        "datasets": [train_data.hub_id] if train_data and train_data.hub_id else None,
    }
    front_matter = yaml.safe_dump({k: v for k, v in metadata.items() if v is not None}, sort_keys=False).strip()
    teacher = _shown(report.get("teacher"))
    what = "cross-encoder reranker" if kind == "reranker" else "embedding model"
    intro = f"A {what} distilled with hf_distill from " + (f"the teacher {teacher}" if teacher else "teacher scores")
    intro += f" into {_shown(report['base_model'])}." if report.get("base_model") else "."
    training = "\n".join(["| | |", "|---|---|", *(f"| {name} | {value} |" for name, value in _training_rows(report))])
    public_model_id = public_path(model_id)
    return _card_template().substitute(
        front_matter=front_matter,
        title=_title(report, repo_id),
        intro=intro,
        training=training,
        evaluation=_evaluation_section(report).rstrip("\n"),
        reproduce=_reproduce_section(report.get("command")),
        usage=_usage_section(kind, public_model_id[0] if public_model_id else model_id, output_dir).rstrip("\n"),
    ).rstrip("\n") + "\n"


def write_model_card(output_dir: str, report: dict[str, Any], repo_id: str | None = None) -> str:
    """Write ``output_dir/README.md``, a Hub model card for the distilled student, and return its text.

    The card shows no local absolute path: local models and data are named by their Hub id or file name
    (:func:`public_name`), the command's paths are made relative or cut to their name (:func:`public_command`).
    ``report`` itself is not changed (``distillation_report.json`` keeps the full paths).

    Args:
        output_dir: the saved student.
        report: what :func:`hf_distill.recipe.run_distillation` builds (``student_kind``, ``base_model``,
            ``teacher``, ``loss``, ``metrics_before``/``metrics_after`` per eval set, ``command``, ...).
            Missing entries (no teacher, no eval set) are said in words.
        repo_id: the Hub repo: the card's title and what the usage examples load; default: titled after the base
            and teacher, loading ``output_dir`` (:func:`push_student` rewrites the card with its repo id).
    """
    output_dir = os.fspath(output_dir)
    text = render_model_card(report, repo_id or output_dir, output_dir, repo_id=repo_id)
    Path(output_dir, "README.md").write_text(text, encoding="utf-8")
    return text


# ---------------------------------------------------------------------------------------------------------
# Push
# ---------------------------------------------------------------------------------------------------------


def _scrub(text: str, token: str | None) -> str:
    from huggingface_hub import get_token

    for secret in {token, get_token()}:
        if secret:
            text = text.replace(secret, "***")
    return _TOKEN_PATTERN.sub("hf_***", text)


def _push_fix(local_path: str, upload_command: str) -> str:
    return (
        "check the repo id, that you are logged in (`hf auth login` or HF_TOKEN) with write access, and the network; "
        f"{local_path} is unchanged: upload it again with `{upload_command}`"
    )


def _call_hub(what: str, fix: str, token: str | None, call: Callable[[], T]) -> T:
    """Run a Hub call; any failure becomes one :class:`HubPushError` with no token in it (and no chained error)."""
    try:
        return call()
    except Exception as error:  # network, HTTP, auth, validation: all mean "the push did not happen"
        message = " ".join(_scrub(f"{type(error).__name__}: {error}", token).split())  # one line
        raise HubPushError(f"{what} failed ({message}). Fix: {fix}") from None


def student_files(output_dir: str) -> list[str]:
    """The paths (relative, ``/``-separated) :func:`push_student` uploads from ``output_dir``."""
    from huggingface_hub.utils import filter_repo_objects

    root = Path(output_dir)
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    return list(filter_repo_objects(files, ignore_patterns=STUDENT_IGNORE_PATTERNS))


def push_student(output_dir: str, repo_id: str, token: str | None = None, private: bool = False) -> str:
    """Upload a saved student folder to the Hub model repo ``repo_id`` (created if needed); returns the commit URL.

    Everything but ``checkpoint-*/`` is uploaded (see the module docstring). When the folder holds
    ``distillation_report.json``, ``README.md`` is rewritten first so its usage examples load ``repo_id``.
    ``token`` defaults to ``HF_TOKEN`` / ``hf auth login``; it is never logged or put in an error.

    Raises:
        HubPushError: the repo could not be created or the upload failed; nothing local was changed.
    """
    from huggingface_hub import HfApi

    output_dir = os.fspath(output_dir)
    if not os.path.isdir(output_dir):
        raise ConfigError(f"{output_dir}: no such folder to push. Fix: pass the --output_dir of a finished run.")
    report_path = Path(output_dir, "distillation_report.json")
    if report_path.is_file():
        write_model_card(output_dir, json.loads(report_path.read_text(encoding="utf-8")), repo_id=repo_id)
    files = student_files(output_dir)
    size_mb = sum(os.path.getsize(os.path.join(output_dir, f)) for f in files) / 2**20
    logger.info("pushing %d files (%.1f MB) from %s to the Hub model repo %s", len(files), size_mb, output_dir, repo_id)
    api = HfApi()
    fix = _push_fix(output_dir, f"hf upload {repo_id} {output_dir} --exclude 'checkpoint-*'")
    what = f"pushing {output_dir} to the Hub model repo {repo_id}"
    _call_hub(what, fix, token, lambda: api.create_repo(repo_id, token=token, private=private, exist_ok=True))
    commit = _call_hub(
        what,
        fix,
        token,
        lambda: api.upload_folder(
            repo_id=repo_id,
            folder_path=output_dir,
            token=token,
            ignore_patterns=list(STUDENT_IGNORE_PATTERNS),
            commit_message="Upload distilled student (hf_distill)",
        ),
    )
    logger.info("pushed to %s", commit.commit_url)
    return commit.commit_url


def push_scored_dataset(jsonl_path: str, repo_id: str, token: str | None = None, private: bool = False) -> str:
    """Upload a teacher-scored listwise JSONL file, as written, to the Hub dataset repo ``repo_id``; returns the
    commit URL.

    The file keeps its name at the repo root, so the raw fp32 scores stay exactly as scored and
    ``load_ranking_dataset(repo_id)`` / ``datasets.load_dataset(repo_id)`` read it back (a name containing
    ``train``/``test``/``validation`` sets the split). ``token`` as in :func:`push_student`.

    Raises:
        HubPushError: the repo could not be created or the upload failed; the local file is unchanged.
    """
    from huggingface_hub import HfApi

    jsonl_path = os.fspath(jsonl_path)
    if not os.path.isfile(jsonl_path):
        raise ConfigError(f"{jsonl_path}: no such file to push. Fix: pass the --output_file of a finished scoring run.")
    name = os.path.basename(jsonl_path)
    api = HfApi()
    what = f"pushing {jsonl_path} to the Hub dataset repo {repo_id}"
    fix = _push_fix(jsonl_path, f"hf upload {repo_id} {jsonl_path} {name} --repo-type dataset")
    _call_hub(
        what,
        fix,
        token,
        lambda: api.create_repo(repo_id, token=token, private=private, repo_type="dataset", exist_ok=True),
    )
    commit = _call_hub(
        what,
        fix,
        token,
        lambda: api.upload_file(
            path_or_fileobj=jsonl_path,
            path_in_repo=name,
            repo_id=repo_id,
            repo_type="dataset",
            token=token,
            commit_message="Upload teacher scores (hf_distill)",
        ),
    )
    logger.info("pushed %s to %s", jsonl_path, commit.commit_url)
    return commit.commit_url
