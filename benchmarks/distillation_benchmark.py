"""hf_distill vs the reference practice (sentence-transformers), side by side, on the same real text.

One run trains, on the quickstart set scored by the full all-MiniLM-L6-v2 (an embedding teacher: cosines), the
same student (all-MiniLM-L6-v2 cut to its first 2 layers), max_length 128, 1 epoch, CPU:

* ``practice_reranker``: ``CrossEncoderTrainer`` + cross-encoder ``MarginMSELoss`` on the seed's triplets (each
  teacher-scored list sorted by teacher score; top 8 x the next 4 as (query, positive, negative), label = teacher
  margin), batch 16, lr 5e-5.
* ``practice_embedding``: ``SentenceTransformerTrainer`` + ``DistillKLDivLoss(temperature=2)`` on the same
  (query, positive, negative) rows with labels ``[s_pos, s_neg]``, batch 16, lr 5e-5.
* ``hf_distill_reranker`` / ``hf_distill_embedding``: ``python recipes/{reranker,embedding}.py`` with its defaults
  and only ``--model_name_or_path --num_hidden_layers 2 --train_file --output_dir --max_length 128`` (plus 1 epoch,
  no evaluation or checkpoints during training).
* ``hf_distill_reranker_gradient_cache``: the reranker recipe with ``--gradient_cache true
  --micro_batch_max_tokens 2048``: the memory knob (one micro-batch's activations at a time, same gradients).
* ``hf_distill_reranker_lambdaloss`` (not in the default ``--pipelines``): the reranker recipe with ``--loss
  lambdaloss``, the loss ``peer_lambdaloss_reranker`` trains with.

Every pipeline is a separate process, timed whole (imports, data, model load, training, save); repeats are
interleaved (the order rotates) so a busy machine slows every pipeline alike; min and median are reported. Then
every student is evaluated by the same code (:mod:`benchmarks.common`): MAP / MRR@10 / NDCG@10 on eval_in_domain
and eval_out_of_domain, next to the teacher and the untrained students. Student forwards and the real-token share
are counted by replaying each pipeline's batches (hf_distill: its own train dataloader; sentence-transformers:
random batches of 16 rows, each column padded to its longest, as its collator does).

The peers at their best (not in the default ``--pipelines``; same data, same student, max_length 128, as many
optimizer steps as hf_distill's recipe of the same kind (``--length matched``, the default: 100 for the
fresh-head reranker on fewer than 800 queries, as its ``min_train_steps``; ``epoch``: one epoch),
each configured to hf_distill's defaults so that the machinery is compared, not the settings: batch 8 queries x
16 candidates, lr 3e-4, linear schedule without warmup, no weight decay, dropout 0, teacher scores divided by
``teacher_score_spread`` (hf_distill's ``teacher_temperature="auto"``), student temperature 1 for rerankers and
0.05 for the cosine bi-encoder (hf_distill's ``student_temperature="auto"``), seed per ``--seeds``):

* ``peer_listnet_reranker``: ``CrossEncoderTrainer`` + cross-encoder ``ListNetLoss`` on listwise rows (query, 16
  docs, labels = teacher / T), raw logits (``activation_fn=Identity``), ST's default ``mini_batch_size``.
* ``peer_lambdaloss_reranker``: the same with ``LambdaLoss`` (default NDCGLoss2++ weighting); its gains are
  ``2**label - 1`` of labels clamped at 0, so labels = (teacher - the query's lowest teacher score) / T.
* ``peer_distillkl_embedding``: ``SentenceTransformerTrainer`` + ``DistillKLDivLoss`` over (query, doc_1 .. doc_16)
  columns, cosine similarity, ``teacher_temperature=T``, ``student_temperature=0.05``.
* ``flagembedding_reranker`` / ``flagembedding_embedding``: FlagEmbedding's own fine-tuning entry points
  (``python -m FlagEmbedding.finetune.{reranker,embedder}.encoder_only.base --knowledge_distillation True``,
  ``train_group_size 16``; rows ``{query, pos, neg, pos_scores, neg_scores}`` with the gold positive as ``pos`` and
  teacher / T as scores; FlagEmbedding always adds its cross-entropy on ``pos``, in-batch for the embedder). Where
  the entry point cannot be imported, the row shows why (recorded by the child at run time) and the benchmark goes
  on; ``--flagembedding_skip_package_init`` runs the same module with ``FlagEmbedding/__init__.py`` (the inference
  imports) skipped instead.

Writes ``<output_dir>/results.json``, ``benchmarks/distillation_time_vs_map.png`` and the table between the
``<!-- distillation-benchmark -->`` markers of ``BENCHMARKS.md``. With several ``--seeds`` every pipeline runs per
seed (hf_distill: ``--seed N``; the others: the trainer seed and the torch seed of the fresh head); the main table
shows the first seed, a second table MAP per seed and min / mean / max.

Usage::

    python benchmarks/distillation_benchmark.py --repeats 3             # ~85 min on 2 CPU cores
    python benchmarks/distillation_benchmark.py --quick                 # smoke run: 48 train queries, 1 repeat
    python benchmarks/distillation_benchmark.py --repeats 1 --output_dir /tmp/hf_distill_peers \
        --pipelines hf_distill_reranker peer_listnet_reranker peer_lambdaloss_reranker hf_distill_embedding \
        peer_distillkl_embedding flagembedding_reranker flagembedding_embedding --train_queries 200 --seeds 1 2 3 4 5
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    EVAL_SPLITS,
    MAX_LENGTH,
    QUICKSTART,
    ROOT,
    STUDENT_LAYERS,
    evaluate_embedding,
    evaluate_reranker,
    fresh_reranker,
    load_json,
    minilm_path,
    prepare_data,
    read_rows,
    run_timed,
    save_json,
    teacher_metrics,
    untrained_embedding_student,
    update_marked_section,
)

# hf_distill's pipelines: name -> (recipe, flags beyond recipe_argv). The gradient-cache row shows the memory knob:
# activations of one 2,048-token micro-batch instead of the whole step's, same gradients, one more forward.
OURS = {
    "hf_distill_reranker": ("reranker", []),
    "hf_distill_embedding": ("embedding", []),
    "hf_distill_reranker_gradient_cache": (
        "reranker",
        ["--gradient_cache", "true", "--micro_batch_max_tokens", "2048"],
    ),
    # hf_distill's own LambdaLoss (NDCG-Loss2++), the same loss as peer_lambdaloss_reranker's.
    "hf_distill_reranker_lambdaloss": ("reranker", ["--loss", "lambdaloss"]),
}
PIPELINES = (
    "practice_reranker",
    "hf_distill_reranker",
    "practice_embedding",
    "hf_distill_embedding",
    "hf_distill_reranker_gradient_cache",
)
# The peers at their best (not run by default: an old rerun is unchanged).
PEERS = (
    "peer_listnet_reranker",
    "peer_lambdaloss_reranker",
    "peer_distillkl_embedding",
    "flagembedding_reranker",
    "flagembedding_embedding",
)
ALL_PIPELINES = PIPELINES + PEERS + ("hf_distill_reranker_lambdaloss",)
PRACTICE = {"batch_size": 16, "learning_rate": 5e-5, "top_k": 8, "num_negatives": 4, "kl_temperature": 2.0}
# hf_distill's defaults the peers are set to (checked against DistillationArguments by `peer_settings_drift`):
# per_device_train_batch_size 8 (TrainingArguments'), learning_rate 3e-4, lr_scheduler_type linear, warmup_steps 0,
# weight_decay 0, group_size 16, student_temperature auto = 0.05 for a cosine bi-encoder (1 for logits).
PEER = {
    "batch_size": 8,
    "learning_rate": 3e-4,
    "lr_scheduler_type": "linear",
    "warmup_steps": 0,
    "weight_decay": 0.0,
    "group_size": 16,
    "embedding_student_temperature": 0.05,
    "logging_steps": 2,
}
FLAGEMBEDDING_MODULES = {
    "reranker": "FlagEmbedding.finetune.reranker.encoder_only.base",
    "embedding": "FlagEmbedding.finetune.embedder.encoder_only.base",
}
# FlagEmbedding's reranker truncates query + passage to query_max_len + passage_max_len tokens: 32 + 96 = 128.
FLAGEMBEDDING_RERANKER_LENGTHS = {"query_max_len": 32, "passage_max_len": 96}
DEFAULT_SEED = 42
MARKED_SECTION = "distillation-benchmark"  # BENCHMARKS.md's <!-- distillation-benchmark:start/end --> lines


# ---------------------------------------------------------------------------------------------------------------
# The reference practice (run in a child process: `distillation_benchmark.py _practice_reranker ...`)
# ---------------------------------------------------------------------------------------------------------------


def practice_triplets(train_file: str) -> list[dict]:
    from hf_distill.data import build_reference_triplets, read_groups

    return build_reference_triplets(read_groups(train_file), PRACTICE["top_k"], PRACTICE["num_negatives"])


def practice_dataset(train_file: str, label_column: str, label):
    """The practice's training rows: (query, positive, negative) columns and ``label(triplet)`` as the label."""
    from datasets import Dataset

    triplets = practice_triplets(train_file)
    columns = {c: [t[c] for t in triplets] for c in ("query", "positive", "negative")}
    return Dataset.from_dict({**columns, label_column: [label(t) for t in triplets]})


def _trainer_args(cls, output_dir: str, seed: int, **settings):
    """A sentence-transformers training-arguments object for one epoch, no evaluation, no checkpoints."""
    return cls(
        output_dir=output_dir,
        num_train_epochs=1,
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=seed,
        **settings,
    )


def _practice_args(cls, output_dir: str, seed: int = DEFAULT_SEED):
    return _trainer_args(
        cls,
        output_dir,
        seed,
        per_device_train_batch_size=PRACTICE["batch_size"],
        learning_rate=PRACTICE["learning_rate"],
        logging_steps=100,
    )


DROPOUT_FIELDS = ("hidden_dropout_prob", "attention_probs_dropout_prob")


def fresh_reranker_init(init_dir: str, seed: int, dropout: float | None = None) -> None:
    """Save :func:`common.fresh_reranker` at ``seed`` (and its tokenizer) to ``init_dir``. ``dropout``: written into
    the config (hidden, attention and classifier dropout), for trainers whose model we cannot reach before training
    (FlagEmbedding)."""
    from transformers import AutoTokenizer

    config = {} if dropout is None else dict.fromkeys(DROPOUT_FIELDS + ("classifier_dropout",), dropout)
    fresh_reranker(seed, **config).save_pretrained(init_dir)
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(init_dir)


class _Progress:
    """Prints elapsed seconds at each log so a long practice run shows where it is (logging costs nothing here)."""

    def __new__(cls):
        from transformers import TrainerCallback

        class Progress(TrainerCallback):
            start = time.perf_counter()

            def on_log(self, args, state, control, logs=None, **kwargs):
                elapsed = time.perf_counter() - self.start
                print(f"[progress] step {state.global_step}/{state.max_steps} {elapsed:.0f} s", flush=True)

        return Progress()


def train_practice_reranker(train_file: str, output_dir: str, seed: int = DEFAULT_SEED) -> None:
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import MarginMSELoss

    train_dataset = practice_dataset(train_file, "score", lambda t: t["score"])  # label = teacher margin
    # The same start as the recipe: MiniLM's first 2 layers and a fresh one-logit head.
    init_dir = os.path.join(output_dir, "init")
    fresh_reranker_init(init_dir, seed)
    model = CrossEncoder(init_dir, num_labels=1, max_length=MAX_LENGTH, device="cpu")
    trainer = CrossEncoderTrainer(
        model=model,
        args=_practice_args(CrossEncoderTrainingArguments, output_dir, seed),
        train_dataset=train_dataset,
        loss=MarginMSELoss(model),
        callbacks=[_Progress()],
    )
    trainer.train()
    model.save_pretrained(os.path.join(output_dir, "final"))


def train_practice_embedding(train_file: str, output_dir: str, seed: int = DEFAULT_SEED) -> None:
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import DistillKLDivLoss

    train_dataset = practice_dataset(train_file, "label", lambda t: [t["positive_score"], t["negative_score"]])
    model = untrained_embedding_student()
    trainer = SentenceTransformerTrainer(
        model=model,
        args=_practice_args(SentenceTransformerTrainingArguments, output_dir, seed),
        train_dataset=train_dataset,
        loss=DistillKLDivLoss(model, temperature=PRACTICE["kl_temperature"]),
        callbacks=[_Progress()],
    )
    trainer.train()
    model.save(os.path.join(output_dir, "final"))


# ---------------------------------------------------------------------------------------------------------------
# The peers at their best (child processes: `distillation_benchmark.py _peer_listnet_reranker TRAIN OUT SEED`)
# ---------------------------------------------------------------------------------------------------------------


def teacher_rows(train_file: str) -> tuple[list[dict], float]:
    """The listwise training rows and hf_distill's ``teacher_temperature="auto"`` on them (mean per-query std)."""
    from hf_distill.losses import teacher_score_spread

    rows = read_rows(train_file)
    return rows, teacher_score_spread(row["scores"] for row in rows)


def listwise_labels(loss: str, scores: list[float], temperature: float) -> list[float]:
    """The cross-encoder peers' labels for one query.

    ListNetLoss takes ``softmax(labels)`` as its target (``labels_matrix.softmax(dim=1)``): teacher / T gives
    hf_distill's ``softmax(t / T_t)``. LambdaLoss clamps labels at 0 and uses ``2**label - 1`` as gains (and only
    the pairs with ``label_i > label_j``), so its labels are shifted per query to start at 0: (t - min t) / T
    keeps the teacher's order, and with a per-query std of ~1 the gains span grades 0 to ~4 like graded relevance.
    """
    if loss == "listnet":
        return [score / temperature for score in scores]
    low = min(scores)
    return [(score - low) / temperature for score in scores]


# Set by the parent for the peers' child processes: optimizer steps (-1: the epoch's), see `peer_max_steps`.
PEER_MAX_STEPS_ENV = "HF_DISTILL_BENCH_PEER_MAX_STEPS"


def peer_max_steps(pipeline: str, train_file: str, length: str) -> int:
    """Optimizer steps of a peer: -1 (its one epoch) or, with ``length="matched"``, as many as hf_distill's recipe
    of the same kind trains on this data (its ``min_train_steps`` default lengthens a fresh-head reranker's short
    run), so that the peers and hf_distill get the same number of updates."""
    if length == "epoch":
        return -1
    from hf_distill.training_args import DistillationArguments

    per_epoch = -(-len(read_rows(train_file)) // PEER["batch_size"])
    minimum = DistillationArguments(output_dir="/tmp/unused").min_train_steps_for(pipeline_kind(pipeline) == "reranker")
    return minimum if per_epoch < minimum else -1


def _peer_max_steps() -> int:
    return int(os.environ.get(PEER_MAX_STEPS_ENV, "-1"))


def _peer_args(cls, output_dir: str, seed: int):
    """hf_distill's defaults (PEER), as a careful user would set them on a sentence-transformers trainer."""
    return _trainer_args(
        cls,
        output_dir,
        seed,
        per_device_train_batch_size=PEER["batch_size"],
        learning_rate=PEER["learning_rate"],
        lr_scheduler_type=PEER["lr_scheduler_type"],
        warmup_steps=PEER["warmup_steps"],
        weight_decay=PEER["weight_decay"],
        logging_steps=PEER["logging_steps"],
        max_steps=_peer_max_steps(),
    )


def train_peer_listwise_reranker(loss_name: str, train_file: str, output_dir: str, seed: int = DEFAULT_SEED) -> None:
    """CrossEncoderTrainer + ListNetLoss / LambdaLoss on one row per query: (query, 16 docs, labels)."""
    import torch
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import LambdaLoss, ListNetLoss, NDCGLoss2PPScheme

    from hf_distill.students import set_dropout

    rows, temperature = teacher_rows(train_file)
    train_dataset = Dataset.from_dict(
        {
            "query": [row["query"] for row in rows],
            "docs": [row["passages"] for row in rows],
            "labels": [listwise_labels(loss_name, row["scores"], temperature) for row in rows],
        }
    )
    init_dir = os.path.join(output_dir, "init")
    fresh_reranker_init(init_dir, seed)
    model = CrossEncoder(init_dir, num_labels=1, max_length=MAX_LENGTH, device="cpu")
    zeroed = set_dropout(model, 0.0)
    # Raw logits (Identity, as hf_distill's student temperature 1); mini_batch_size None = ST's default: the
    # batch's 8 x 16 pairs go through the model 8 pairs (= the batch size) at a time.
    if loss_name == "listnet":
        loss = ListNetLoss(model, activation_fn=torch.nn.Identity(), mini_batch_size=None)
    else:
        loss = LambdaLoss(
            model, weighting_scheme=NDCGLoss2PPScheme(), activation_fn=torch.nn.Identity(), mini_batch_size=None
        )
    print(f"[peer] {loss_name}: teacher temperature {temperature:.4g}, dropout 0 in {zeroed} modules", flush=True)
    trainer = CrossEncoderTrainer(
        model=model,
        args=_peer_args(CrossEncoderTrainingArguments, output_dir, seed),
        train_dataset=train_dataset,
        loss=loss,
        callbacks=[_Progress()],
    )
    trainer.train()
    model.save_pretrained(os.path.join(output_dir, "final"))


def train_peer_distillkl_embedding(train_file: str, output_dir: str, seed: int = DEFAULT_SEED) -> None:
    """SentenceTransformerTrainer + DistillKLDivLoss over (query, doc_1, ..., doc_16) with the 16 teacher scores."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import DistillKLDivLoss
    from sentence_transformers.util import pairwise_cos_sim

    from hf_distill.students import set_dropout

    rows, temperature = teacher_rows(train_file)
    width = PEER["group_size"]
    if any(len(row["passages"]) != width for row in rows):
        raise ValueError(f"peer_distillkl_embedding needs {width} candidates per query (one column each)")
    columns = {"query": [row["query"] for row in rows]}
    for i in range(width):
        columns[f"doc_{i + 1}"] = [row["passages"][i] for row in rows]
    columns["label"] = [row["scores"] for row in rows]
    model = untrained_embedding_student()
    zeroed = set_dropout(model, 0.0)
    # softmax(t / T_t) against softmax(cos / 0.05): hf_distill embedding's two distributions. The loss is
    # multiplied by T_s^2 = 0.0025 (ST's choice); hf_distill's listnet is not: same distributions, the
    # gradients 400x smaller (AdamW normalises the scale away; max_grad_norm 1 then rarely clips).
    loss = DistillKLDivLoss(
        model,
        similarity_fct=pairwise_cos_sim,
        student_temperature=PEER["embedding_student_temperature"],
        teacher_temperature=temperature,
    )
    print(f"[peer] DistillKLDivLoss: teacher temperature {temperature:.4g}, dropout 0 in {zeroed} modules", flush=True)
    trainer = SentenceTransformerTrainer(
        model=model,
        args=_peer_args(SentenceTransformerTrainingArguments, output_dir, seed),
        train_dataset=Dataset.from_dict(columns),
        loss=loss,
        callbacks=[_Progress()],
    )
    trainer.train()
    model.save(os.path.join(output_dir, "final"))


def flagembedding_versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    import transformers

    try:
        flag = version("FlagEmbedding")
    except PackageNotFoundError:
        flag = "not installed"
    return f"FlagEmbedding {flag}, transformers {transformers.__version__}"


def _skip_flagembedding_package_init() -> None:
    """Make ``FlagEmbedding`` an empty package (its ``__init__`` only imports the inference code) so that its
    ``finetune`` subpackages import on their own."""
    import importlib.util
    import types

    for name in [n for n in sys.modules if n == "FlagEmbedding" or n.startswith("FlagEmbedding.")]:
        del sys.modules[name]
    spec = importlib.util.find_spec("FlagEmbedding")
    package = types.ModuleType("FlagEmbedding")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["FlagEmbedding"] = package


def flagembedding_rows(rows: list[dict], temperature: float) -> list[dict]:
    """FlagEmbedding's distillation rows: the gold positive(s) as ``pos`` (the teacher's best where a query has
    none), the rest as ``neg``, teacher / T as scores (FlagEmbedding softmaxes the scores as given)."""
    out = []
    for row in rows:
        labels = row.get("labels") or [0] * len(row["passages"])
        positive = [i for i, label in enumerate(labels) if label > 0]
        positive = positive or [max(range(len(row["scores"])), key=row["scores"].__getitem__)]
        negative = [i for i in range(len(row["passages"])) if i not in positive]
        out.append(
            {
                "query": row["query"],
                "pos": [row["passages"][i] for i in positive],
                "neg": [row["passages"][i] for i in negative],
                "pos_scores": [row["scores"][i] / temperature for i in positive],
                "neg_scores": [row["scores"][i] / temperature for i in negative],
            }
        )
    return out


def train_flagembedding(kind: str, train_file: str, output_dir: str, seed: int = DEFAULT_SEED, *flags: str) -> None:
    """FlagEmbedding's own fine-tuning entry point, as ``python -m <module> ...`` in this process.

    The import is tried first, as the entry point would; where it fails, ``error.json`` gets the exception and
    the versions and the process exits 3 (with ``--skip_package_init``: the module is imported again with the
    package ``__init__`` skipped, and ``note.json`` says so).
    """
    import importlib
    import runpy

    module = FLAGEMBEDDING_MODULES[kind]
    os.makedirs(output_dir, exist_ok=True)

    def fail(message: str) -> None:
        save_json(os.path.join(output_dir, "error.json"), {"error": message})
        print(f"[flagembedding] {message}", flush=True)

    try:
        importlib.import_module(module)
    except Exception as error:
        reason = f"`python -m {module}` fails: {type(error).__name__}: {error} ({flagembedding_versions()})"
        if "--skip_package_init" not in flags:
            fail(reason)
            sys.exit(3)
        try:
            _skip_flagembedding_package_init()
            importlib.import_module(module)
        except Exception as second:
            fail(f"{reason}; with the package __init__ skipped: {type(second).__name__}: {second}")
            sys.exit(3)
        note = f"{reason}. Run with FlagEmbedding/__init__.py (its inference imports) skipped."
        save_json(os.path.join(output_dir, "note.json"), {"note": note})
        print(f"[flagembedding] {note}", flush=True)

    from transformers import AutoModel, AutoTokenizer

    rows, temperature = teacher_rows(train_file)
    data_file = os.path.join(output_dir, "data", "train.jsonl")
    os.makedirs(os.path.dirname(data_file), exist_ok=True)
    with open(data_file, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in flagembedding_rows(rows, temperature))
    init_dir = os.path.join(output_dir, "init")
    if kind == "reranker":
        # FlagEmbedding builds its model itself: dropout 0 goes in through the config of the start checkpoint.
        fresh_reranker_init(init_dir, seed, dropout=0.0)
        specific = [
            "--query_max_len",
            str(FLAGEMBEDDING_RERANKER_LENGTHS["query_max_len"]),
            "--passage_max_len",
            str(FLAGEMBEDDING_RERANKER_LENGTHS["passage_max_len"]),
            "--max_len",
            str(MAX_LENGTH),
        ]
    else:
        AutoModel.from_pretrained(
            minilm_path(), num_hidden_layers=STUDENT_LAYERS, **dict.fromkeys(DROPOUT_FIELDS, 0.0)
        ).save_pretrained(init_dir)
        AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(init_dir)
        specific = [
            "--query_max_len",
            str(MAX_LENGTH),
            "--passage_max_len",
            str(MAX_LENGTH),
            "--temperature",
            str(PEER["embedding_student_temperature"]),
            "--sentence_pooling_method",
            "mean",
            "--normalize_embeddings",
            "True",
            "--kd_loss_type",
            "kl_div",
        ]
    argv = [
        "--model_name_or_path",
        init_dir,
        "--train_data",
        data_file,
        "--cache_path",
        os.path.join(output_dir, "cache"),
        "--train_group_size",
        str(PEER["group_size"]),
        "--knowledge_distillation",
        "True",
        *specific,
        "--output_dir",
        os.path.join(output_dir, "final"),
        "--num_train_epochs",
        "1",
        "--max_steps",
        str(_peer_max_steps()),
        "--per_device_train_batch_size",
        str(PEER["batch_size"]),
        "--learning_rate",
        str(PEER["learning_rate"]),
        "--lr_scheduler_type",
        PEER["lr_scheduler_type"],
        "--warmup_steps",
        str(PEER["warmup_steps"]),
        "--weight_decay",
        str(PEER["weight_decay"]),
        "--seed",
        str(seed),
        # FlagEmbedding views the scores as [per_device_train_batch_size, group]: a short last batch would not fit.
        "--dataloader_drop_last",
        "True",
        "--save_strategy",
        "no",
        "--report_to",
        "none",
        "--logging_steps",
        str(PEER["logging_steps"]),
        "--disable_tqdm",
        "True",
    ]
    print(f"[flagembedding] teacher temperature {temperature:.4g}: python -m {module} {' '.join(argv)}", flush=True)
    sys.argv = [module, *argv]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except Exception as error:
        fail(f"training failed: {type(error).__name__}: {error} ({flagembedding_versions()})")
        raise


CHILDREN = {
    "_practice_reranker": train_practice_reranker,
    "_practice_embedding": train_practice_embedding,
    "_peer_listnet_reranker": functools.partial(train_peer_listwise_reranker, "listnet"),
    "_peer_lambdaloss_reranker": functools.partial(train_peer_listwise_reranker, "lambdaloss"),
    "_peer_distillkl_embedding": train_peer_distillkl_embedding,
    "_flagembedding_reranker": functools.partial(train_flagembedding, "reranker"),
    "_flagembedding_embedding": functools.partial(train_flagembedding, "embedding"),
}


def peer_settings_drift() -> list[str]:
    """PEER values that no longer match hf_distill's defaults (empty when the peers still copy them)."""
    from types import SimpleNamespace

    from hf_distill.trainer import EmbeddingDistillationTrainer
    from hf_distill.training_args import DistillationArguments

    defaults = {name: f.default for name, f in DistillationArguments.__dataclass_fields__.items()}
    expected = {
        "batch_size": defaults["per_device_train_batch_size"],
        "learning_rate": defaults["learning_rate"],
        "lr_scheduler_type": getattr(defaults["lr_scheduler_type"], "value", defaults["lr_scheduler_type"]),
        "warmup_steps": defaults["warmup_steps"],
        "weight_decay": defaults["weight_decay"],
        "group_size": defaults["group_size"],
        "embedding_student_temperature": EmbeddingDistillationTrainer.auto_student_temperature(
            SimpleNamespace(**defaults)
        ),
    }
    drift = [f"{k}: peers {PEER[k]!r}, hf_distill {v!r}" for k, v in expected.items() if PEER[k] != v]
    if defaults["dropout"] != "0" or defaults["teacher_temperature"] != "auto":
        drift.append(f"dropout {defaults['dropout']!r} / teacher_temperature {defaults['teacher_temperature']!r}")
    return drift


# ---------------------------------------------------------------------------------------------------------------
# Commands, counting, evaluation
# ---------------------------------------------------------------------------------------------------------------


def pipeline_kind(pipeline: str) -> str:
    if pipeline in OURS:
        return OURS[pipeline][0]
    return "reranker" if pipeline.endswith("reranker") else "embedding"


def run_key(pipeline: str, seed: int) -> str:
    """Key of one pipeline's runs / metrics at one seed; the default seed keeps the bare name (old results)."""
    return pipeline if seed == DEFAULT_SEED else f"{pipeline}@seed{seed}"


def split_key(key: str) -> tuple[str, int]:
    pipeline, _, seed = key.partition("@seed")
    return pipeline, int(seed) if seed else DEFAULT_SEED


def recipe_argv(
    pipeline: str, train_file: str, output_dir: str, seed: int = DEFAULT_SEED, length: str = "matched"
) -> list[str]:
    """The flags the issue allows: model, layer cut, data, output, max_length; plus 1 epoch and no eval/saves
    (and ``--seed`` for a seed other than the default). ``length="epoch"`` adds ``--min_train_steps 0``: exactly
    one epoch, also for a fresh-head reranker whose short run the recipe would otherwise lengthen."""
    return [
        "--model_name_or_path",
        minilm_path(),
        "--num_hidden_layers",
        str(STUDENT_LAYERS),
        "--train_file",
        train_file,
        "--output_dir",
        output_dir,
        "--max_length",
        str(MAX_LENGTH),
        "--num_train_epochs",
        "1",
        "--eval_strategy",
        "no",
        "--save_strategy",
        "no",
        "--report_to",
        "none",
        "--disable_tqdm",
        "true",
        *OURS[pipeline][1],
        *([] if seed == DEFAULT_SEED else ["--seed", str(seed)]),
        *(["--min_train_steps", "0"] if length == "epoch" else []),
    ]


def command_for(
    pipeline: str,
    train_file: str,
    output_dir: str,
    seed: int = DEFAULT_SEED,
    flags: tuple[str, ...] = (),
    length: str = "matched",
) -> list[str]:
    if pipeline in OURS:
        recipe = ROOT / "recipes" / f"{pipeline_kind(pipeline)}.py"
        return [sys.executable, str(recipe), *recipe_argv(pipeline, train_file, output_dir, seed, length)]
    seeded = [] if seed == DEFAULT_SEED and not flags else [str(seed), *flags]
    return [sys.executable, __file__, f"_{pipeline}", train_file, output_dir, *seeded]


def final_model_dir(pipeline: str, output_dir: str) -> str:
    return output_dir if pipeline in OURS else os.path.join(output_dir, "final")


def count_ours(pipeline: str, train_file: str, output_dir: str) -> dict[str, float]:
    """Replay the recipe's own train dataloader (same args, same seed): forwards and real-token share."""
    from transformers import HfArgumentParser

    from hf_distill.data import load_ranking_dataset
    from hf_distill.model_loading import ModelArguments, load_student
    from hf_distill.recipe import ScriptArguments
    from hf_distill.trainer import DistillationArguments, EmbeddingDistillationTrainer, RerankerDistillationTrainer

    parser = HfArgumentParser((ScriptArguments, ModelArguments, DistillationArguments))
    _, model_args, training_args = parser.parse_args_into_dataclasses(recipe_argv(pipeline, train_file, output_dir))
    kind = pipeline_kind(pipeline)
    model, tokenizer = load_student(kind, model_args)
    cls = RerankerDistillationTrainer if kind == "reranker" else EmbeddingDistillationTrainer
    train_dataset = load_ranking_dataset(train_file)
    trainer = cls(model=model, args=training_args, train_dataset=train_dataset, processing_class=tokenizer)
    forwards = real = padded = 0
    for batch in trainer.get_train_dataloader():
        forwards += sum(len(mb["input_ids"]) for mb in batch["micro_batches"])
        real += int(batch["num_real_tokens"])
        padded += int(batch["num_padded_tokens"])
    return {
        "student_forwards": forwards,
        "real_token_share": real / padded,
        "learning_rate": training_args.learning_rate,
        "loss": training_args.loss,
        "batch_size": training_args.per_device_train_batch_size,
        "group_size": training_args.group_size,
    }


def count_practice(kind: str, train_file: str) -> dict[str, float]:
    """sentence-transformers' batches: 16 random rows, each column (pairs or texts) padded to its own longest."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    triplets = practice_triplets(train_file)
    order = list(range(len(triplets)))
    random.Random(42).shuffle(order)
    forwards = real = padded = 0
    for start in range(0, len(order), PRACTICE["batch_size"]):
        batch = [triplets[i] for i in order[start : start + PRACTICE["batch_size"]]]
        if kind == "reranker":
            columns = [
                tokenizer([t["query"] for t in batch], [t[c] for t in batch], truncation=True, max_length=MAX_LENGTH)
                for c in ("positive", "negative")
            ]
        else:
            columns = [
                tokenizer([t[c] for t in batch], truncation=True, max_length=MAX_LENGTH)
                for c in ("query", "positive", "negative")
            ]
        for encoded in columns:
            lengths = [len(ids) for ids in encoded["input_ids"]]
            forwards += len(lengths)
            real += sum(lengths)
            padded += len(lengths) * max(lengths)
    return {
        "student_forwards": forwards,
        "real_token_share": real / padded,
        "learning_rate": PRACTICE["learning_rate"],
        "loss": (
            "MarginMSELoss (triplets)" if kind == "reranker" else f"DistillKLDivLoss (T={PRACTICE['kl_temperature']})"
        ),
        "batch_size": PRACTICE["batch_size"],
        "triplets": len(triplets),
    }


def count_peer(pipeline: str, train_file: str, seed: int = DEFAULT_SEED) -> dict[str, float]:
    """Replay a peer's batches (8 random queries x 16 candidates) the way its collator and loss feed the student.

    * ST cross-encoder listwise losses: the 128 (query, doc) pairs of a batch, in row order, go through the model
      ``mini_batch_size`` pairs at a time (None = the batch size, 8), each chunk padded to its longest.
    * ST DistillKLDivLoss (``embed_columns``): the query column alone, then the 16 doc columns merged into one
      forward of 128 texts padded to the widest doc of the batch.
    * FlagEmbedding reranker: all 128 pairs of the batch in one forward (query cut at 32 + 96 // 4 tokens, passage
      at 96 + 32 // 2, the pair at 128), padded to the longest; embedder: one forward of the 8 queries, one of the
      128 passages. Its short last batch is dropped (``--dataloader_drop_last``).
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    rows, temperature = teacher_rows(train_file)
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    size = PEER["batch_size"]
    batches = [[rows[i] for i in order[start : start + size]] for start in range(0, len(order), size)]
    if pipeline.startswith("flagembedding") and batches and len(batches[-1]) < size:
        batches = batches[:-1]
    totals = {"forwards": 0, "real": 0, "padded": 0}

    def forward(lengths: list[int], width: int | None = None) -> None:
        totals["forwards"] += len(lengths)
        totals["real"] += sum(lengths)
        totals["padded"] += len(lengths) * (width or max(lengths))

    def lengths_of(*texts) -> list[int]:
        return [len(ids) for ids in tokenizer(*texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]]

    for batch in batches:
        if pipeline in ("peer_listnet_reranker", "peer_lambdaloss_reranker"):
            pairs = [(row["query"], passage) for row in batch for passage in row["passages"]]
            chunk = len(batch)  # mini_batch_size None -> the batch size
            for start in range(0, len(pairs), chunk):
                part = pairs[start : start + chunk]
                forward(lengths_of([q for q, _ in part], [p for _, p in part]))
        elif pipeline == "peer_distillkl_embedding":
            forward(lengths_of([row["query"] for row in batch]))
            docs = lengths_of([passage for row in batch for passage in row["passages"]])
            forward(docs, max(docs))
        elif pipeline == "flagembedding_reranker":
            q_len, p_len = (
                FLAGEMBEDDING_RERANKER_LENGTHS["query_max_len"],
                FLAGEMBEDDING_RERANKER_LENGTHS["passage_max_len"],
            )
            lengths = []
            for row in batch:
                query = len(
                    tokenizer.encode(
                        row["query"], truncation=True, max_length=q_len + p_len // 4, add_special_tokens=False
                    )
                )
                passages = tokenizer(
                    row["passages"], truncation=True, max_length=p_len + q_len // 2, add_special_tokens=False
                )["input_ids"]
                lengths += [min(query + len(ids) + 3, q_len + p_len) for ids in passages]  # [CLS] q [SEP] p [SEP]
            forward(lengths)
        else:  # flagembedding_embedding
            forward(lengths_of([row["query"] for row in batch]))
            forward(lengths_of([passage for row in batch for passage in row["passages"]]))
    t = f"{temperature:.3g}"
    losses = {
        "peer_listnet_reranker": f"ListNetLoss (labels t/T, T={t})",
        "peer_lambdaloss_reranker": f"LambdaLoss NDCG2++ (labels (t-min)/T, T={t})",
        "peer_distillkl_embedding": f"DistillKLDivLoss (16 docs, T_t={t}, T_s={PEER['embedding_student_temperature']})",
        "flagembedding_reranker": f"KD softmax(t/T) + CE on pos (T={t})",
        "flagembedding_embedding": f"KD kl_div (T_t={t}, T_s={PEER['embedding_student_temperature']}) + in-batch CE",
    }
    return {
        "student_forwards": totals["forwards"],
        "real_token_share": totals["real"] / totals["padded"],
        "learning_rate": PEER["learning_rate"],
        "loss": losses[pipeline],
        "batch_size": PEER["batch_size"],
        "group_size": PEER["group_size"],
        "teacher_temperature": temperature,
    }


def untrained_reranker_metrics(files: dict[str, str]) -> dict:
    from transformers import AutoTokenizer

    return evaluate_reranker(
        fresh_reranker(DEFAULT_SEED), files, tokenizer=AutoTokenizer.from_pretrained(minilm_path())
    )


# ---------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------


def summarise(results: dict, seed: int = DEFAULT_SEED) -> dict:
    """Per pipeline at one seed: timings, counts, metrics; a pipeline that failed has its ``error`` instead."""
    summary = {}
    for pipeline in ALL_PIPELINES:
        key = run_key(pipeline, seed)
        runs = results["runs"].get(key, [])
        if not runs:
            error = results.get("errors", {}).get(key)
            if error:
                summary[pipeline] = {**results["counts"].get(pipeline, {}), "error": error, "metrics": None}
            continue
        walls = [r["wall_s"] for r in runs]
        rss = [r["peak_rss_mib"] for r in runs]
        cpu = [r.get("cpu_s", float("nan")) for r in runs]
        summary[pipeline] = {
            "repeats": len(runs),
            "wall_min": min(walls),
            "wall_median": statistics.median(walls),
            "cpu_min": min(cpu),
            "cpu_median": statistics.median(cpu),
            "rss_max": max(rss),
            "rss_median": statistics.median(rss),
            **results["counts"].get(pipeline, {}),
            "metrics": results["metrics"].get(key),
            "note": results.get("notes", {}).get(key),
        }
    return summary


def seed_maps(results: dict) -> dict[str, dict[int, dict[str, float]]]:
    """MAP per pipeline, per seed, per eval split, from every evaluated run in ``results``."""
    out: dict[str, dict[int, dict[str, float]]] = {}
    for key, metrics in results["metrics"].items():
        pipeline, seed = split_key(key)
        if pipeline in ALL_PIPELINES and metrics and all(split in metrics for split in EVAL_SPLITS):
            out.setdefault(pipeline, {})[seed] = {split: metrics[split]["map"] for split in EVAL_SPLITS}
    return out


def goals(summary: dict, references: dict, per_seed: dict | None = None) -> list[tuple[str, bool, str]]:
    out = []

    def m(pipeline, split="eval_in_domain"):
        return summary[pipeline]["metrics"][split]["map"]

    # (goal label, our pipeline, the practice it replaces, speed-up target); the gradient-cache row is held to the
    # reranker's goals too, so the memory knob's cost in time and quality shows next to its memory.
    comparisons = (
        ("reranker", "hf_distill_reranker", "practice_reranker", 4.0),
        ("embedding", "hf_distill_embedding", "practice_embedding", 2.5),
        ("reranker --gradient_cache", "hf_distill_reranker_gradient_cache", "practice_reranker", 4.0),
    )
    for label, ours, theirs, target in comparisons:
        if not (summary.get(ours, {}).get("metrics") and summary.get(theirs, {}).get("metrics")):
            continue
        speedup = summary[theirs]["wall_median"] / summary[ours]["wall_median"]
        cpu_speedup = summary[theirs]["cpu_median"] / summary[ours]["cpu_median"]
        out.append((f"{label}: >= {target}x faster per epoch (median wall)", speedup >= target, f"{speedup:.2f}x"))
        out.append((f"{label}: >= {target}x less CPU time per epoch", cpu_speedup >= target, f"{cpu_speedup:.2f}x"))
        for split in EVAL_SPLITS:
            delta = m(ours, split) - m(theirs, split)
            measured = f"{m(ours, split):.4f} vs {m(theirs, split):.4f} ({delta:+.4f})"
            out.append((f"{label}: MAP >= practice ({split})", delta >= 0, measured))
        share = summary[ours]["real_token_share"]
        out.append((f"{label}: >= 95% real tokens per student batch", share >= 0.95, f"{share:.1%}"))
        rss_ours, rss_theirs = summary[ours]["rss_median"], summary[theirs]["rss_median"]
        out.append(
            (f"{label}: peak RSS <= practice", rss_ours <= rss_theirs, f"{rss_ours:.0f} vs {rss_theirs:.0f} MiB")
        )
    out += peer_goals(summary, per_seed or {})
    if "hf_distill_embedding" in summary and summary["hf_distill_embedding"]["metrics"]:
        for split in EVAL_SPLITS:
            start = references["untrained_embedding"][split]["map"]
            top = references["teacher"][split]["map"]
            closed = (m("hf_distill_embedding", split) - start) / (top - start)
            goal = f"embedding closes >= half the untrained-to-teacher gap ({split})"
            out.append((goal, closed >= 0.5, f"{closed:.0%}"))
    return out


PEER_SPEEDUP = 1.5


def peer_goals(summary: dict, per_seed: dict) -> list[tuple[str, bool, str]]:
    """hf_distill against the best peer of its student (highest in-domain MAP among the peers that ran; the mean
    over seeds where both sides ran several): >= 1.5x faster (wall and CPU), MAP >= it, peak RSS <= it."""
    out = []
    for kind, ours in (("reranker", "hf_distill_reranker"), ("embedding", "hf_distill_embedding")):
        if not summary.get(ours, {}).get("metrics"):
            continue
        peers = [p for p in PEERS if pipeline_kind(p) == kind and summary.get(p, {}).get("metrics")]
        if not peers:
            continue
        several = len(per_seed.get(ours, {})) > 1 and all(len(per_seed.get(p, {})) > 1 for p in peers)

        def map_of(pipeline, split="eval_in_domain", several=several):
            if several:
                return statistics.mean(v[split] for v in per_seed[pipeline].values())
            return summary[pipeline]["metrics"][split]["map"]

        best = max(peers, key=map_of)
        label = f"{kind} vs best peer ({best})"
        speedup = summary[best]["wall_median"] / summary[ours]["wall_median"]
        cpu_speedup = summary[best]["cpu_median"] / summary[ours]["cpu_median"]
        out.append((f"{label}: >= {PEER_SPEEDUP}x faster (median wall)", speedup >= PEER_SPEEDUP, f"{speedup:.2f}x"))
        out.append((f"{label}: >= {PEER_SPEEDUP}x less CPU time", cpu_speedup >= PEER_SPEEDUP, f"{cpu_speedup:.2f}x"))
        over = f", mean of {len(per_seed[ours])} vs {len(per_seed[best])} seeds" if several else ""
        for split in EVAL_SPLITS:
            delta = map_of(ours, split) - map_of(best, split)
            measured = f"{map_of(ours, split):.4f} vs {map_of(best, split):.4f} ({delta:+.4f}{over})"
            out.append((f"{label}: MAP >= peer ({split})", delta >= 0, measured))
        rss_ours, rss_theirs = summary[ours]["rss_median"], summary[best]["rss_median"]
        out.append((f"{label}: peak RSS <= peer", rss_ours <= rss_theirs, f"{rss_ours:.0f} vs {rss_theirs:.0f} MiB"))
    return out


LABELS = {
    "practice_reranker": "sentence-transformers CrossEncoderTrainer + MarginMSE triplets",
    "hf_distill_reranker": "hf_distill recipes/reranker.py (defaults)",
    "practice_embedding": "sentence-transformers SentenceTransformerTrainer + DistillKLDiv",
    "hf_distill_embedding": "hf_distill recipes/embedding.py (defaults)",
    "hf_distill_reranker_gradient_cache": "hf_distill recipes/reranker.py --gradient_cache (2,048-token micro-batches)",
    "hf_distill_reranker_lambdaloss": "hf_distill recipes/reranker.py --loss lambdaloss",
    "peer_listnet_reranker": "peer: sentence-transformers CrossEncoderTrainer + ListNetLoss (listwise, 16 docs)",
    "peer_lambdaloss_reranker": "peer: sentence-transformers CrossEncoderTrainer + LambdaLoss (listwise, 16 docs)",
    "peer_distillkl_embedding": "peer: sentence-transformers SentenceTransformerTrainer + DistillKLDivLoss (16 docs)",
    "flagembedding_reranker": "peer: FlagEmbedding finetune.reranker.encoder_only.base --knowledge_distillation",
    "flagembedding_embedding": "peer: FlagEmbedding finetune.embedder.encoder_only.base --knowledge_distillation",
}
SHORT = {
    "practice_reranker": "sentence-transformers",
    "practice_embedding": "sentence-transformers",
    "hf_distill_reranker": "hf_distill",
    "hf_distill_embedding": "hf_distill",
    "peer_listnet_reranker": "ST ListNet",
    "peer_lambdaloss_reranker": "ST LambdaLoss",
    "peer_distillkl_embedding": "ST DistillKL",
    "flagembedding_reranker": "FlagEmbedding",
    "flagembedding_embedding": "FlagEmbedding",
}


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def markdown(results: dict, summary: dict, goal_rows, seed: int = DEFAULT_SEED, per_seed: dict | None = None) -> str:
    refs = results["references"]
    several = {p: v for p, v in (per_seed or {}).items() if len(v) > 1}
    seeded = f"seed {seed}{' (per-seed MAP below)' if several else ''}; " if seed != DEFAULT_SEED or several else ""
    lines = [
        f"Measured {results['date']} on {results['machine']}; {seeded}"
        f"{max((s.get('repeats', 0) for s in summary.values()), default=0)} repeat(s), interleaved"
        f"{' (QUICK smoke run)' if results['quick'] else ''}. "
        f"Train: {results['train_groups']} queries x 16 candidates; "
        f"eval: {results.get('eval_groups', 150)} queries each. "
        "Wall = whole process (imports, data, model load, 1 epoch, save).",
        "",
        "| pipeline | loss | wall s/epoch min | median | CPU s median | student forwards | real tokens | "
        "peak RSS MiB | "
        "MAP in | MRR@10 in | NDCG@10 in | MAP ood | MRR@10 ood | NDCG@10 ood |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def metric_cells(metrics):
        return " | ".join(f"{metrics[s][k]:.4f}" for s in EVAL_SPLITS for k in ("map", "mrr@10", "ndcg@10"))

    def loss_cell(s):
        if "loss" not in s:
            return "-"
        return f"{s['loss']}, lr {s['learning_rate']:g}, batch {s['batch_size']}"

    for name, key in (
        ("teacher: all-MiniLM-L6-v2 (6 layers, cosine)", "teacher"),
        ("untrained student: 2 layers, cosine", "untrained_embedding"),
        ("untrained student: 2 layers + fresh head (reranker)", "untrained_reranker"),
    ):
        lines.append(f"| {name} |{' - |' * 7} {metric_cells(refs[key])} |")
    notes = []
    for pipeline in ALL_PIPELINES:
        if pipeline not in summary:
            continue
        s = summary[pipeline]
        if s.get("error"):
            lines.append(f"| {LABELS[pipeline]} | {loss_cell(s)} | failed: {_cell(s['error'])} |{' - |' * 11}")
            continue
        if not s["metrics"]:
            continue
        if s.get("note"):
            notes.append(f"* {pipeline}: {_cell(s['note'])}")
        lines.append(
            f"| {LABELS[pipeline]} | {loss_cell(s)} | "
            f"{s['wall_min']:.1f} | {s['wall_median']:.1f} | {s['cpu_median']:.0f} | {s['student_forwards']:,} | "
            f"{s['real_token_share']:.1%} | {s['rss_median']:.0f} | "
            f"{metric_cells(s['metrics'])} |"
        )
    if notes:
        lines += ["", *notes]
    if several:
        lines += [
            "",
            "MAP per seed (each seed: its own run, 1 epoch):",
            "",
            "| pipeline | seeds | MAP in per seed | min | mean | max | MAP ood per seed | min | mean | max |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for pipeline in ALL_PIPELINES:
            if pipeline not in several:
                continue
            seeds = sorted(several[pipeline])
            cells = []
            for split in EVAL_SPLITS:
                values = [several[pipeline][sd][split] for sd in seeds]
                cells += [
                    " ".join(f"{v:.4f}" for v in values),
                    f"{min(values):.4f}",
                    f"{statistics.mean(values):.4f}",
                    f"{max(values):.4f}",
                ]
            lines.append(f"| {pipeline} | {' '.join(map(str, seeds))} | {' | '.join(cells)} |")
    lines += ["", "| goal | met | measured |", "|---|---|---|"]
    lines += [f"| {name} | {'yes' if ok else '**no**'} | {value} |" for name, ok, value in goal_rows]
    return "\n".join(lines)


def write_chart(summary: dict, references: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=False)
    for ax, kind in zip(axes, ("reranker", "embedding")):
        peers = [(p, "^") for p in PEERS if pipeline_kind(p) == kind]
        for pipeline, marker in ((f"practice_{kind}", "s"), (f"hf_distill_{kind}", "o"), *peers):
            s = summary.get(pipeline)
            if not s or not s.get("metrics"):
                continue
            for split, color in zip(EVAL_SPLITS, ("tab:blue", "tab:orange")):
                ax.scatter(s["wall_median"], s["metrics"][split]["map"], marker=marker, color=color, s=60)
                ax.annotate(
                    f"{SHORT[pipeline]} ({split.split('_', 1)[1]})",
                    (s["wall_median"], s["metrics"][split]["map"]),
                    textcoords="offset points",
                    xytext=(6, 4),
                    fontsize=8,
                )
        for split, color in zip(EVAL_SPLITS, ("tab:blue", "tab:orange")):
            ax.axhline(references["teacher"][split]["map"], color=color, linestyle="--", linewidth=1)
            start = references["untrained_embedding" if kind == "embedding" else "untrained_reranker"][split]["map"]
            ax.axhline(start, color=color, linestyle=":", linewidth=1)
        ax.set_title(f"{kind} student (2 layers), 1 epoch, CPU")
        ax.set_xlabel("wall seconds per epoch (median, whole process)")
        ax.set_ylabel("MAP (dashed: teacher, dotted: untrained)")
        ax.set_xlim(left=0)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------------------


def subset(files: dict[str, str], directory: Path, train_groups: int, eval_groups: int) -> dict[str, str]:
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, path in files.items():
        keep = train_groups if split == "train" else eval_groups
        target = directory / f"{split}.jsonl"
        with open(path, encoding="utf-8") as f:
            lines = [line for line in f if line.strip()][:keep]
        target.write_text("".join(lines), encoding="utf-8")
        out[split] = str(target)
    return out


def record_failure(results: dict, key: str, run_dir: Path, log_path: Path, error: Exception) -> str:
    """A peer that failed: the child's own ``error.json`` (FlagEmbedding: the import error) or the log's tail."""
    recorded = load_json(run_dir / "error.json", None)
    if recorded and recorded.get("error"):
        message = recorded["error"]
    else:
        tail = [line for line in Path(log_path).read_text(encoding="utf-8", errors="replace").splitlines() if line]
        message = f"{str(error).splitlines()[0]} ... {tail[-1] if tail else ''}"
    results.setdefault("errors", {})[key] = message
    return message


def main() -> None:
    if len(sys.argv) >= 4 and sys.argv[1] in CHILDREN:
        train_file, output_dir, *rest = sys.argv[2:]
        seed = int(rest[0]) if rest else DEFAULT_SEED
        CHILDREN[sys.argv[1]](train_file, output_dir, seed, *rest[1:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="/tmp/hf_distill_benchmark")
    parser.add_argument("--cache_dir", default="/tmp/hf_distill_bench_cache", help="teacher-scored data")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pipelines", nargs="+", default=list(PIPELINES), choices=ALL_PIPELINES)
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=[DEFAULT_SEED], help="run every pipeline once per seed (table: first)"
    )
    parser.add_argument(
        "--flagembedding_skip_package_init",
        action="store_true",
        help="where `python -m FlagEmbedding.finetune...` cannot import, run it with FlagEmbedding/__init__ skipped",
    )
    parser.add_argument(
        "--length",
        "--peer_length",
        dest="length",
        choices=("matched", "epoch"),
        default="matched",
        help="matched: each peer trains as many steps as hf_distill's recipe of its kind (its min_train_steps); "
        "epoch: every pipeline trains exactly 1 epoch (hf_distill with --min_train_steps 0)",
    )
    parser.add_argument(
        "--data_dir",
        default=str(QUICKSTART),
        help="quickstart-format data to score and train on (recipes/quickstart/build_data.py --num_train N "
        "--output_dir DIR for more train queries); give each data dir its own --cache_dir",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 48 train / 30 eval queries, 1 repeat")
    parser.add_argument(
        "--train_queries", type=int, default=None, help="train on the first N queries only (all 600 by default)"
    )
    parser.add_argument(
        "--merge_from", nargs="*", default=[], help="output dirs of other runs (e.g. one per pipeline) to report with"
    )
    parser.add_argument("--no_write", action="store_true", help="do not touch BENCHMARKS.md and the PNG")
    args = parser.parse_args()
    if set(args.pipelines) & set(PEERS):
        for drift in peer_settings_drift():
            print(f"[warning] the peers no longer copy hf_distill's defaults: {drift}", flush=True)

    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    files = prepare_data(args.cache_dir, args.data_dir)
    available = len(read_rows(files["train"]))
    if args.train_queries and args.train_queries > available:
        sys.exit(
            f"error: --train_queries {args.train_queries} but {files['train']} holds {available} queries. Fix: build "
            f"more with `python recipes/quickstart/build_data.py --num_train {args.train_queries} --output_dir DIR` "
            "and pass --data_dir DIR with a --cache_dir of its own."
        )
    if args.quick:
        files = subset(files, output_dir / "quick_data", 48, 30)
        args.repeats = 1
    elif args.train_queries:
        train = subset({"train": files["train"]}, output_dir / "data", args.train_queries, 0)["train"]
        files = {**files, "train": train}
    results_path = output_dir / "results.json"
    results = load_json(results_path, None)
    if results is None or results.get("quick") != args.quick:
        results = {"runs": {}, "counts": {}, "metrics": {}, "references": {}, "quick": args.quick}
    results.setdefault("errors", {})
    results.setdefault("notes", {})
    results.update(
        date=time.strftime("%Y-%m-%d"),
        machine=(
            f"{os.cpu_count()} CPU cores, torch {__import__('torch').__version__}, CPU fp32, "
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
        ),
        repeats=args.repeats,
        length=args.length,
        train_groups=len(read_rows(files["train"])),
        eval_groups=len(read_rows(files["eval_in_domain"])),
    )

    if not results["references"]:
        print("[ref] teacher and untrained students", flush=True)
        results["references"] = {
            "teacher": teacher_metrics(files),
            "untrained_embedding": evaluate_embedding(untrained_embedding_student(), files),
            "untrained_reranker": untrained_reranker_metrics(files),
        }
        save_json(results_path, results)

    failed = set()  # peers that failed in this invocation: not retried at the next repeat
    for seed in args.seeds:
        for repeat in range(args.repeats):
            order = args.pipelines[repeat % len(args.pipelines) :] + args.pipelines[: repeat % len(args.pipelines)]
            for pipeline in order:
                key = run_key(pipeline, seed)
                runs = results["runs"].setdefault(key, [])
                if len(runs) > repeat or key in failed:
                    continue
                run_dir = output_dir / f"{key.replace('@', '-')}-r{repeat}"
                log_path = output_dir / f"{key.replace('@', '-')}-r{repeat}.log"
                seeded = f" seed {seed}" if args.seeds != [DEFAULT_SEED] else ""
                print(f"[run {repeat + 1}/{args.repeats}{seeded}] {pipeline} ...", flush=True)
                flags = ("--skip_package_init",) if pipeline.startswith("flagembedding") else ()
                flags = flags if args.flagembedding_skip_package_init else ()
                command = command_for(pipeline, files["train"], str(run_dir), seed, flags, args.length)
                child_env = {}
                if pipeline in PEERS:
                    steps = peer_max_steps(pipeline, files["train"], args.length)
                    child_env[PEER_MAX_STEPS_ENV] = str(steps)
                    results.setdefault("peer_max_steps", {})[key] = steps
                try:
                    timing = run_timed(command, log_path, env=child_env)
                except RuntimeError as error:
                    if pipeline not in PEERS:
                        raise
                    failed.add(key)
                    print(f"    FAILED: {record_failure(results, key, run_dir, log_path, error)}", flush=True)
                    save_json(results_path, results)
                    continue
                results["errors"].pop(key, None)
                note = load_json(run_dir / "note.json", None)
                if note:
                    results["notes"][key] = note["note"]
                print(f"    {timing['wall_s']:.1f} s, peak RSS {timing['peak_rss_mib']:.0f} MiB", flush=True)
                runs.append(timing)
                if key not in results["metrics"]:
                    model_dir = final_model_dir(pipeline, str(run_dir))
                    evaluate = evaluate_reranker if pipeline_kind(pipeline) == "reranker" else evaluate_embedding
                    results["metrics"][key] = evaluate(model_dir, files)
                    print(f"    {json.dumps(results['metrics'][key])}", flush=True)
                save_json(results_path, results)

    for pipeline in args.pipelines:
        if pipeline not in results["counts"]:
            if pipeline in OURS:
                counted = count_ours(pipeline, files["train"], str(output_dir / "count"))
            elif pipeline in PEERS:
                counted = count_peer(pipeline, files["train"])
            else:
                counted = count_practice(pipeline_kind(pipeline), files["train"])
            results["counts"][pipeline] = counted
            save_json(results_path, results)

    for other in args.merge_from:
        merged = load_json(Path(other) / "results.json", None)
        if merged is None:
            continue
        for key in ("runs", "counts", "metrics", "errors", "notes"):
            for pipeline, value in merged.get(key, {}).items():
                results.setdefault(key, {}).setdefault(pipeline, value)
    per_seed = seed_maps(results)
    summary = summarise(results, args.seeds[0])
    goal_rows = goals(summary, results["references"], per_seed)
    table = markdown(results, summary, goal_rows, args.seeds[0], per_seed)
    print(table)
    save_json(output_dir / "summary.json", {"summary": summary, "goals": goal_rows, "map_per_seed": per_seed})
    if not args.no_write:
        write_chart(summary, results["references"], ROOT / "benchmarks" / "distillation_time_vs_map.png")
        update_marked_section(ROOT / "BENCHMARKS.md", MARKED_SECTION, table)


if __name__ == "__main__":
    main()
