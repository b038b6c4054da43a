"""hf_distill: distil large ranking teachers into small students with the Hugging Face Trainer.

The public API, importable from here (loaded on first use, so ``import hf_distill.data`` stays light)::

    from hf_distill import DistillationArguments, RerankerDistillationTrainer, load_ranking_dataset, register_loss
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> module that defines it
_PUBLIC = {
    # 1. score: teachers
    "load_teacher": "teachers",
    "score_groups": "teachers",
    "score_to_file": "teachers",
    # 2. train: data, students, losses, trainers
    "RankingGroup": "data",
    "load_ranking_dataset": "data",
    "read_groups": "data",
    "iter_groups": "data",
    "RankingSource": "data",
    "write_listwise_jsonl": "data",
    "eval_set_names": "data",
    "ModelArguments": "model_loading",
    "load_student": "model_loading",
    "wrap_lora": "model_loading",
    "save_student": "model_loading",
    "DistillationLoss": "losses",
    "register_loss": "losses",
    "get_loss": "losses",
    "available_losses": "losses",
    "DistillationArguments": "training_args",
    "DistillationTrainer": "trainer",
    "RerankerDistillationTrainer": "trainer",
    "EmbeddingDistillationTrainer": "trainer",
    # 3. measure
    "compute_ranking_metrics": "metrics",
    # the vocabulary of model kinds, and the sentence-transformers checkpoint format
    "ModelKind": "kinds",
    "Task": "kinds",
    "pool": "st_format",
    "read_sentence_transformers_config": "st_format",
    "write_sentence_transformers_config": "st_format",
    # errors a user can fix
    "HfDistillError": "errors",
    "ConfigError": "errors",
    "DataFormatError": "errors",
    "TeacherConfigError": "errors",
    "HubPushError": "errors",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'hf_distill' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
