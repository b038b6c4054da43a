"""Teacher scoring: run a big ranking model once over every (query, passage) and keep its raw fp32 scores.

* :mod:`~hf_distill.teachers.models` - the teachers: :class:`Qwen3RerankerTeacher` (yes/no logit difference),
  :class:`CrossEncoderTeacher` (seq-cls logit), :class:`EmbeddingTeacher` (cosine), :func:`load_teacher`.
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

from hf_distill.teachers.models import (
    DTYPES,
    POOLING_MODES,
    TEACHER_TYPES,
    CrossEncoderTeacher,
    EmbeddingTeacher,
    Qwen3RerankerTeacher,
    Teacher,
    TeacherConfigError,
    load_teacher,
    pool,
    read_sentence_transformers_config,
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
