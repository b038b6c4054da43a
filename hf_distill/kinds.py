"""One vocabulary for what a ranking model is, shared by teachers, students, scorers, recipes and the card.

Two axes, one word each:

* the **task** (:data:`Task`): what the distilled model is for.

  - ``reranker``: scores a (query, passage) pair read together;
  - ``embedding``: embeds each text on its own; a pair's score is the similarity of two embeddings.

* the **architecture** (:data:`ModelKind`): how a model computes a score. Teachers (``Teacher.kind``), students'
  scorers (``scorer.kind``) and ``--student_type`` use these names:

  ==================  ===========  ====================================================  ==========================
  kind                task         score                                                 examples
  ==================  ===========  ====================================================  ==========================
  ``cross_encoder``   reranker     the one logit of a sequence-classification head       bge-reranker-v2-m3, MiniLM
  ``causal_lm``       reranker     ``logit(yes) - logit(no)`` after a Qwen3-Reranker      Qwen3-Reranker-0.6B / -8B
                                   prompt, at its last position
  ``bi_encoder``      embedding    ``sim(pool(f(q)), pool(f(p)))``                       bge-m3, Qwen3-Embedding
  ==================  ===========  ====================================================  ==========================

A teacher scores *items* (:func:`item_unit`): a ``pair`` for the two reranker kinds, a ``text`` for a bi-encoder
(each text is embedded once, pairs are scored afterwards). ``--teacher_type`` takes the kind names, and keeps
``qwen3_reranker`` and ``embedding`` (:data:`TEACHER_TYPE_ALIASES`), the names the seed configs and commands use.
"""

from __future__ import annotations

from typing import Any, Literal

from .errors import ConfigError

__all__ = [
    "BI_ENCODER",
    "CAUSAL_LM",
    "CROSS_ENCODER",
    "MODEL_KINDS",
    "STUDENT_TYPES",
    "TASKS",
    "TEACHER_TYPES",
    "TEACHER_TYPE_ALIASES",
    "ModelKind",
    "Task",
    "check_task",
    "is_causal_lm",
    "is_causal_lm_checkpoint",
    "item_unit",
    "task_of",
    "teacher_kind",
]

Task = Literal["reranker", "embedding"]
TASKS: tuple[str, ...] = ("reranker", "embedding")

ModelKind = Literal["cross_encoder", "causal_lm", "bi_encoder"]
CROSS_ENCODER: ModelKind = "cross_encoder"
CAUSAL_LM: ModelKind = "causal_lm"
BI_ENCODER: ModelKind = "bi_encoder"
MODEL_KINDS: tuple[str, ...] = (CROSS_ENCODER, CAUSAL_LM, BI_ENCODER)

# --student_type: a reranker student's kind, or auto (causal_lm for a *ForCausalLM model, else cross_encoder).
STUDENT_TYPES: tuple[str, ...] = ("auto", CROSS_ENCODER, CAUSAL_LM)
# --teacher_type: the old names stay accepted; the first two are what README commands and seed configs use.
TEACHER_TYPE_ALIASES: dict[str, ModelKind] = {"qwen3_reranker": CAUSAL_LM, "embedding": BI_ENCODER}
TEACHER_TYPES: tuple[str, ...] = ("qwen3_reranker", CROSS_ENCODER, "embedding", CAUSAL_LM, BI_ENCODER)

_TASK_OF_KIND: dict[str, Task] = {CROSS_ENCODER: "reranker", CAUSAL_LM: "reranker", BI_ENCODER: "embedding"}


def check_task(task: str) -> Task:
    """``task`` itself when it is ``reranker`` or ``embedding``; a :class:`ConfigError` otherwise."""
    if task not in TASKS:
        raise ConfigError(f"the task must be one of {TASKS}, got {task!r}.")
    return task  # type: ignore[return-value]


def task_of(kind: str) -> Task:
    """The task a model kind serves: ``reranker`` for cross_encoder and causal_lm, ``embedding`` for bi_encoder."""
    if kind not in _TASK_OF_KIND:
        raise ConfigError(f"the model kind must be one of {MODEL_KINDS}, got {kind!r}.")
    return _TASK_OF_KIND[kind]


def item_unit(kind: str) -> Literal["pair", "text"]:
    """What a teacher of this kind runs its model on once: a (query, passage) ``pair``, or one ``text``."""
    return "text" if task_of(kind) == "embedding" else "pair"


def teacher_kind(teacher_type: str) -> ModelKind:
    """The model kind a ``--teacher_type`` value names (a kind name, or the alias ``qwen3_reranker`` / ``embedding``)."""
    if teacher_type in TEACHER_TYPE_ALIASES:
        return TEACHER_TYPE_ALIASES[teacher_type]
    if teacher_type in MODEL_KINDS:
        return teacher_type  # type: ignore[return-value]
    raise ConfigError(f"teacher_type must be one of {TEACHER_TYPES}, got {teacher_type!r}.")


def is_causal_lm(model: Any) -> bool:
    """Whether ``model`` (possibly wrapped by PEFT) is a ``*ForCausalLM``: a next-token head over the vocabulary."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return type(base).__name__.endswith("ForCausalLM")


def is_causal_lm_checkpoint(model_name_or_path: str, trust_remote_code: bool = False) -> bool:
    """Whether a checkpoint declares a ``*ForCausalLM`` architecture in its config (read without loading weights).

    Raises ``OSError`` when no config can be read (a wrong path, an offline Hub id not in the cache).
    """
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_name_or_path, trust_remote_code=trust_remote_code)
    return any(name.endswith("ForCausalLM") for name in config.architectures or [])
