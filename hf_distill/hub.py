"""Publishing to the Hub: the push of a distilled student, or of a teacher-scored data file.

* :func:`push_student` uploads a saved student folder, its model card (:mod:`hf_distill.model_card`) rewritten
  first to load the repo it goes to; :func:`push_scored_dataset` a teacher-scored JSONL file
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

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from .errors import ConfigError, HubPushError
from .model_card import write_model_card
from .reports import REPORT_FILE, DistillationReport

logger = logging.getLogger("hf_distill")

# Patterns in huggingface_hub's sense: fnmatch on the path relative to the folder, ``*`` also matches ``/``.
STUDENT_IGNORE_PATTERNS = ["checkpoint-*"]
# Access tokens look like hf_ + 30-odd letters; scrubbed from error messages even when they are not ours.
_TOKEN_PATTERN = re.compile(r"hf_[A-Za-z0-9]{16,}")

T = TypeVar("T")


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
    report_path = Path(output_dir, REPORT_FILE)
    if report_path.is_file():
        write_model_card(output_dir, DistillationReport.load(report_path), repo_id=repo_id)
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
