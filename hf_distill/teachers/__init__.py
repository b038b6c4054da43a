"""Teacher scoring: run a big ranking model once over every (query, passage) and keep its raw fp32 scores.

* :mod:`~hf_distill.teachers.models` - the teachers: :class:`Qwen3RerankerTeacher` (yes/no logit difference),
  :class:`CrossEncoderTeacher` (seq-cls logit), :class:`EmbeddingTeacher` (cosine).
* :func:`load_teacher` (this module) - builds one of them, or the vLLM one, from a type name and options.
* :mod:`~hf_distill.teachers.vllm_backend` - :class:`Qwen3RerankerVLLMTeacher`, same prompts on vLLM.
* :mod:`~hf_distill.teachers.runner` - unique items, length-sorted token-budget batches, data-parallel
  shards, resumable work dir: :func:`score_groups` (in memory) and :func:`score_to_file` (what
  ``recipes/score_teacher.py`` runs).

Example::

    from hf_distill.data import read_groups
    from hf_distill.teachers import load_teacher, score_groups

    groups = read_groups("mteb_rows.jsonl", require_scores=False)
    teacher = load_teacher("qwen3_reranker", "Qwen/Qwen3-Reranker-8B", dtype="bfloat16")
    scores = score_groups(teacher, groups, max_tokens_per_batch=65536)  # one list of floats per group
"""

from __future__ import annotations

from typing import Any

import torch

from hf_distill.errors import TeacherConfigError
from hf_distill.kinds import BI_ENCODER, CAUSAL_LM, CROSS_ENCODER, TEACHER_TYPES, teacher_kind
from hf_distill.st_format import POOLING_MODES, pool, read_sentence_transformers_config
from hf_distill.teachers.models import (
    DTYPES,
    CrossEncoderTeacher,
    EmbeddingTeacher,
    Qwen3RerankerTeacher,
    Teacher,
)
from hf_distill.teachers.runner import (
    DEFAULT_MAX_TOKENS_PER_BATCH,
    ResumeMismatchError,
    build_work,
    combine,
    partial_dir_for,
    plan_batches,
    score_groups,
    score_to_file,
)

__all__ = [
    "DEFAULT_MAX_TOKENS_PER_BATCH",
    "DTYPES",
    "POOLING_MODES",
    "TEACHER_TYPES",
    "CrossEncoderTeacher",
    "EmbeddingTeacher",
    "Qwen3RerankerTeacher",
    "ResumeMismatchError",
    "Teacher",
    "TeacherConfigError",
    "build_work",
    "combine",
    "load_teacher",
    "partial_dir_for",
    "plan_batches",
    "pool",
    "read_sentence_transformers_config",
    "score_groups",
    "score_to_file",
]


def load_teacher(
    teacher_type: str,
    model_name_or_path: str,
    *,
    backend: str = "hf",
    max_length: int | None = None,
    instruction: str | None = None,
    pooling: str | None = None,
    dtype: str = "auto",
    attn_implementation: str | None = None,
    device: str | None = None,
    trust_remote_code: bool = False,
    model: torch.nn.Module | None = None,
    prefix_cache: bool = True,
    truncation: str | None = None,
    allow_decoder: bool = False,
    **backend_kwargs: Any,
) -> Teacher:
    """Build a teacher from its kind (:mod:`hf_distill.kinds`) and backend.

    ``teacher_type``: ``causal_lm`` (alias ``qwen3_reranker``: the Qwen3-Reranker yes/no prompt),
    ``cross_encoder`` or ``bi_encoder`` (alias ``embedding``). Options a kind does not use are refused rather than
    silently ignored. ``model`` (cross_encoder and bi_encoder only) scores with an already loaded model; see
    :class:`Teacher`. ``prefix_cache`` (causal_lm, HF backend): run each query's shared prompt prefix once and
    reuse its KV cache for the query's candidates (same scores; ``False`` runs every prompt whole).
    ``truncation`` and ``allow_decoder``: cross_encoder only, see :class:`CrossEncoderTeacher`.
    """
    if teacher_type not in TEACHER_TYPES:
        raise TeacherConfigError(f"teacher_type must be one of {TEACHER_TYPES}, got {teacher_type!r}")
    kind = teacher_kind(teacher_type)
    if backend not in ("hf", "vllm"):
        raise TeacherConfigError(f"backend must be 'hf' or 'vllm', got {backend!r}")
    if backend == "vllm" and kind != CAUSAL_LM:
        raise TeacherConfigError(
            f"backend='vllm' is only implemented for teacher_type='qwen3_reranker', not {teacher_type!r}. "
            "Fix: use --backend hf."
        )
    if pooling is not None and kind != BI_ENCODER:
        raise TeacherConfigError(f"--pooling applies to embedding teachers only, not {teacher_type!r}. Fix: drop it.")
    if instruction is not None and kind == CROSS_ENCODER:
        raise TeacherConfigError("a cross-encoder teacher takes no instruction. Fix: drop --instruction.")
    if truncation is not None and kind != CROSS_ENCODER:
        raise TeacherConfigError(
            f"--truncation applies to cross_encoder teachers only, not {teacher_type!r} (qwen3_reranker cuts the "
            "document and never the prompt; an embedding model cuts each text). Fix: drop it."
        )
    if model is not None and kind == CAUSAL_LM:
        raise TeacherConfigError("an in-memory model= is supported for cross_encoder and embedding teachers only.")
    common = dict(
        max_length=max_length,
        dtype=dtype,
        attn_implementation=attn_implementation,
        device=device,
        trust_remote_code=trust_remote_code,
    )
    if kind == CAUSAL_LM:
        if backend == "vllm":
            from hf_distill.teachers.vllm_backend import Qwen3RerankerVLLMTeacher

            return Qwen3RerankerVLLMTeacher(model_name_or_path, instruction=instruction, **common, **backend_kwargs)
        return Qwen3RerankerTeacher(model_name_or_path, instruction=instruction, prefix_cache=prefix_cache, **common)
    if kind == CROSS_ENCODER:
        return CrossEncoderTeacher(
            model_name_or_path,
            model=model,
            truncation=truncation or "longest_first",
            allow_decoder=allow_decoder,
            **common,
        )
    return EmbeddingTeacher(model_name_or_path, pooling=pooling, instruction=instruction, model=model, **common)
