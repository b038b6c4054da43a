"""``DistillationTrainer``: a thin ``transformers.Trainer`` that trains a student to reproduce a teacher's scores.

One step = one collated batch of B listwise groups (see :mod:`hf_distill.collators`): the student scores every
unique (query, passage) pair or text once, the scores are put back into a ``[B, N]`` matrix, and a loss from
:mod:`hf_distill.losses` compares it with the teacher's ``[B, N]`` matrix. Evaluation yields the same matrices
and :func:`hf_distill.metrics.compute_ranking_metrics` turns them into MAP / MRR@10 / NDCG@10 and teacher
agreement. Everything else (optimiser, schedule, checkpoints, DDP / DeepSpeed / FSDP, PEFT) is the Trainer's.

* :class:`RerankerDistillationTrainer` - cross-encoder student (sequence-classification logit).
* :class:`EmbeddingDistillationTrainer` - bi-encoder student; saves a checkpoint that sentence-transformers loads
  with the same pooling and normalisation.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_pt_utils import LengthGroupedSampler

from .cli import ConfigError
from .collators import GROUP_INDEX_COLUMN, BiEncoderCollator, CrossEncoderCollator, Qwen3RerankerCollator
from .losses import DistillationLoss, get_loss, teacher_score_spread
from .metrics import compute_ranking_metrics
from .prompts import qwen3_reranker_chat_template
from .students import (
    BiEncoderScorer,
    CausalYesNoScorer,
    CrossEncoderScorer,
    resolve_student_type,
    sentence_transformers_pooling,
    set_dropout,
)

logger = logging.getLogger("hf_distill")

POINTWISE_LOSSES = ("mse",)
# Collated tensors that are targets, not model inputs: they keep fp32 under DeepSpeed's bf16/fp16 input cast.
FP32_TARGET_KEYS = ("teacher_scores",)
# Metrics that compare with a teacher: left out for an eval set that has only labels.
TEACHER_METRIC_KEYS = ("loss", "spearman", "kendall")
# A student this large is a pretrained model: the layer-cut default learning rate would wreck it.
LARGE_STUDENT_PARAMETERS = 100_000_000


@dataclass
class DistillationArguments(TrainingArguments):
    """``TrainingArguments`` plus what distillation needs. Every field is also a ``--flag`` of the recipes."""

    # --- loss ---------------------------------------------------------------------------------------------------
    loss: str = field(
        default="listnet",
        metadata={
            "help": "Name of a registered loss: mse, margin_mse (all pairs), margin_mse_triplets (the reference "
            "practice's top_k x num_negatives pairs), kl, ranknet, listnet, or your own @register_loss name."
        },
    )
    gradient_cache: bool = field(
        default=False,
        metadata={
            "help": "Bound activation memory to one micro-batch instead of the whole batch of groups (GradCache, "
            "Gao et al. 2021): score every micro-batch without autograd, take the loss's gradient with respect to "
            "the scores (or embeddings), then run forward + backward per micro-batch with that gradient. Same "
            "gradients, one more forward per step. For large groups or batches on little memory; not with "
            "DeepSpeed or FSDP."
        },
    )
    dropout: str = field(
        default="0",
        metadata={
            "help": "Dropout probability of every dropout layer of the student while it trains: a number, or keep "
            "(the checkpoint's own, e.g. 0.1 for BERT-style models). Default 0: a distilled student already fits "
            "soft targets, and dropout noise drowns the small score differences a student starts from (a "
            "cross-encoder made from a bi-encoder: MAP 0.26 with MiniLM's 0.1 vs 0.31 without at lr 1e-4, 0.45 at "
            "3e-4; see BENCHMARKS.md). "
            "The saved config keeps the checkpoint's values."
        },
    )
    teacher_temperature: str = field(
        default="auto",
        metadata={
            "help": "Teacher softmax temperature of listwise losses (kl, listnet): a number, or auto = the mean "
            "per-query standard deviation of the training teacher scores, so cosine (spread ~0.15) and logit "
            "(spread ~3) teachers get the same softness (see BENCHMARKS.md)."
        },
    )
    student_temperature: str = field(
        default="auto",
        metadata={
            "help": "Student softmax temperature of listwise losses (kl, listnet): a number, or auto = 1 for "
            "logit students (rerankers) and 0.05 for bi-encoders with bounded scores in [-1, 1] (cosine, or dot of "
            "normalised embeddings; the scale 20 of sentence-transformers' MultipleNegativesRankingLoss). The saved "
            "student's scores are unchanged: the temperature only enters the loss. kl is multiplied by T_s^2 "
            "(Hinton et al., as sentence-transformers' DistillKLDivLoss): at 0.05 the loss reads 400x smaller than "
            "listnet's; Adam does not mind, but weigh --hard_label_weight against that."
        },
    )
    margin_top_k: int = field(
        default=8, metadata={"help": "margin_mse_triplets: the teacher's top_k candidates act as positives."}
    )
    margin_num_negatives: int = field(
        default=4, metadata={"help": "margin_mse_triplets: negatives per positive, ranked right after the top_k."}
    )
    loss_kwargs: str | None = field(
        default=None,
        metadata={"help": "Extra keyword arguments of the loss as a JSON object, e.g. '{\"weighted\": true}'."},
    )
    hard_label_weight: float = field(
        default=0.0,
        metadata={"help": "Weight of a listwise cross-entropy on the gold labels, added when labels exist (0 = off)."},
    )
    hard_label_temperature: str = field(
        default="auto",
        metadata={"help": "Softmax temperature of the hard-label cross-entropy term: a number, or auto = the "
                  "student temperature (1 for logit students, 0.05 for cosine bi-encoders: at 1 a softmax over "
                  "cosines in [-1, 1] is nearly flat and the term would teach almost nothing)."},
    )
    # --- candidates and tokens ------------------------------------------------------------------------------------
    group_size: int | None = field(
        default=16,
        metadata={"help": "Candidates kept per query per training step (None: all). Evaluation uses all."},
    )
    top_fraction: float = field(
        default=0.5,
        metadata={"help": "Share of group_size filled with the teacher's top candidates; the rest is sampled."},
    )
    keep_labelled_positives: bool = field(
        default=True,
        metadata={"help": "Keep a group's labelled positives whatever their teacher rank when cutting it to "
                  "group_size. False: the teacher's ranking alone picks the candidates (the reference practice's "
                  "top-k x next-m triplets)."},
    )
    max_length: int = field(
        default=512, metadata={"help": "Token limit of a (query, passage) pair (cross-encoder) or a text (bi-encoder)."}
    )
    micro_batch_max_tokens: int = field(
        default=16384,
        metadata={"help": "Padded tokens per student forward; items are length-sorted and cut to this budget. It "
                  "bounds the size of one forward, not the step's memory: without --gradient_cache every "
                  "micro-batch's activations are kept until the one backward, so activation memory follows all "
                  "tokens of the batch. To bound memory use --gradient_cache (one micro-batch at a time) or a "
                  "smaller per_device_train_batch_size / group_size."},
    )
    micro_batch_overhead_tokens: int = field(
        default=32,
        metadata={"help": "Price of one extra forward in tokens when cutting micro-batches: higher = fewer, "
                  "more padded forwards. 32 gave 97% (reranker) and 96% (embedding) real tokens on the "
                  "quickstart text, where 64 gave 95.7% / 94.3% at the same speed (BENCHMARKS.md)."},
    )
    # --- bi-encoder students ------------------------------------------------------------------------------------------
    pooling: str = field(
        default="auto",
        metadata={"help": "Bi-encoder pooling: cls, mean, last (token), or auto: what the student's "
                  "sentence-transformers files declare (1_Pooling/config.json, read from the local folder or the "
                  "Hub / the local Hub cache). auto on a checkpoint without such files is an error: pass --pooling."},
    )
    normalize_embeddings: bool = field(default=True, metadata={"help": "L2-normalise bi-encoder embeddings."})
    similarity: str = field(default="cosine", metadata={"help": "Bi-encoder similarity: cosine or dot."})
    similarity_scale: float = field(
        default=1.0, metadata={"help": "Bi-encoder score = similarity_scale * similarity."}
    )
    query_prefix: str = field(default="", metadata={"help": "Text prepended to queries (bi-encoder), e.g. an instruction."})
    passage_prefix: str = field(default="", metadata={"help": "Text prepended to passages (bi-encoder)."})
    # --- LLM students -------------------------------------------------------------------------------------------------
    student_type: str = field(
        default="auto",
        metadata={"help": "Reranker student: cross_encoder (sequence-classification logit), causal_lm (Qwen3-Reranker "
                  "style: logit(yes) - logit(no) at the prompt's last token), or auto: causal_lm for a *ForCausalLM "
                  "model, else cross_encoder."},
    )
    instruction: str | None = field(
        default=None,
        metadata={"help": "causal_lm students: the <Instruct> line of the Qwen3-Reranker prompt, as given to "
                  "score_teacher.py (default: the model card's web-search task). Qwen3-Embedding students take "
                  "theirs as --query_prefix 'Instruct: {task}\\nQuery:'."},
    )
    # --- Trainer defaults that distillation needs -------------------------------------------------------------------
    learning_rate: float = field(
        default=3e-4,
        metadata={
            "help": "Peak learning rate (AdamW). 3e-4, not the Trainer's 5e-5: a small layer-cut student with a fresh "
            "ranking head learns little in one epoch at 5e-5 or 1e-4. 3e-4 is the rate that learned on every seed we "
            "ran (2-layer MiniLM reranker: MAP 0.30-0.45 on 4 seeds); 1e-3 peaked higher on one seed (0.53) and stayed "
            "near random on three (BENCHMARKS.md). Fine-tuning a pretrained reranker or embedder (bge-reranker-v2-m3, "
            "bge-m3) wants 1e-5 to 2e-5, as the seed configs under recipes/ set."
        },
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: the collator needs the query/passages/scores columns."}
    )
    ddp_broadcast_buffers: bool | None = field(
        default=False,
        metadata={"help": "Kept False: DDP would broadcast buffers (constant position ids here) in every forward, "
                  "a collective that hangs when ranks run different numbers of micro-batch forwards."},
    )
    ddp_timeout: int = field(
        default=10800,
        metadata={"help": "Seconds a process waits at a collective (the Trainer's 1800, raised): the main process "
                  "reads, validates and tokenises the training file alone while the others wait, which takes "
                  "long for tens of millions of passages (the cache makes later runs fast)."},
    )
    train_sampling_strategy: str = field(
        default="group_by_length",
        metadata={"help": "group_by_length (default: groups of similar token length share a batch), random, sequential."},
    )

    def dropout_probability(self) -> float | None:
        """``dropout`` as a float, or None for "keep"."""
        if isinstance(self.dropout, str) and self.dropout.strip().lower() == "keep":
            return None
        try:
            probability = float(self.dropout)
        except (TypeError, ValueError):
            probability = -1.0
        if not 0.0 <= probability < 1.0:
            raise ValueError(f"--dropout must be a probability in [0, 1) or 'keep', got {self.dropout!r}.")
        return probability

    def loss_options(self) -> dict[str, Any]:
        """The options of ``self.loss`` that its function accepts, taken from the fields above and ``loss_kwargs``."""
        candidates = {
            # "auto" is resolved by the trainer (from the training scores / the student type).
            "teacher_temperature": _temperature("teacher_temperature", self.teacher_temperature),
            "student_temperature": _temperature("student_temperature", self.student_temperature),
            "top_k": self.margin_top_k,
            "num_negatives": self.margin_num_negatives,
        }
        accepted = inspect.signature(get_loss(self.loss)).parameters
        options = {k: v for k, v in candidates.items() if k in accepted}
        if self.loss_kwargs:
            try:
                extra = json.loads(self.loss_kwargs)
            except json.JSONDecodeError as error:
                raise ValueError(f"--loss_kwargs is not valid JSON ({error}). Fix: pass an object like '{{\"a\": 1}}'.")
            if not isinstance(extra, dict):
                raise ValueError("--loss_kwargs must be a JSON object. Fix: pass an object like '{\"a\": 1}'.")
            options.update(extra)
        return options


class _RandomState:
    """The CPU and CUDA random state at one point, to replay a forward's dropout masks exactly (GradCache)."""

    def __init__(self) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    @contextlib.contextmanager
    def replay(self):
        devices = list(range(torch.cuda.device_count())) if self.cuda is not None else []
        with torch.random.fork_rng(devices=devices):  # the outer stream continues as after pass 1
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state_all(self.cuda)
            yield


def has_teacher_scores(dataset) -> bool:
    """Whether a ranking dataset carries teacher scores (a ``scores`` column); labels-only eval sets do not."""
    return "scores" in getattr(dataset, "column_names", ())


def _warn_on_default_learning_rate(model: torch.nn.Module, args: DistillationArguments) -> None:
    default = DistillationArguments.__dataclass_fields__["learning_rate"].default
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if args.learning_rate == default and trainable > LARGE_STUDENT_PARAMETERS:
        logger.warning(
            "learning_rate is the default %g, chosen for small layer-cut students, but this student trains %.0fM "
            "parameters: a pretrained model of that size (bge-reranker-v2-m3, bge-m3) usually diverges there. "
            "Fix: pass --learning_rate 1e-5 to 2e-5, as the seed configs under recipes/ do.",
            default, trainable / 1e6,
        )


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """transformers' ``LengthGroupedSampler`` with a permutation drawn from ``(seed, epoch)``.

    The Trainer builds its length-grouped sampler with ``generator=None``, so each epoch's permutation comes
    from the global torch RNG at the moment the epoch starts: a run resumed mid-epoch (whose RNG was freshly
    seeded) and DDP ranks that consumed different amounts of RNG draw different permutations.
    """

    def __init__(self, *args: Any, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seed = seed
        self.set_epoch(0)

    @classmethod
    def from_sampler(cls, sampler: LengthGroupedSampler, seed: int) -> "EpochSeededLengthGroupedSampler":
        return cls(sampler.batch_size, lengths=sampler.lengths, seed=seed)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)

    def __iter__(self):
        self.set_epoch(self.epoch)  # the same permutation each time this epoch is iterated
        return super().__iter__()


class _EpochSeedCallback(TrainerCallback):
    """Passes the starting epoch to the trainer's samplers (the Trainer's loop variable is not exposed)."""

    def __init__(self, trainer: "DistillationTrainer") -> None:
        self.trainer = trainer

    def on_epoch_begin(self, args, state, control, **kwargs):
        # state.epoch is the float progress: 0.0 at the start, 1.5 when resuming halfway through epoch 2.
        self.trainer.set_sampling_epoch(int(math.floor(state.epoch or 0.0)))


def _temperature(name: str, value: Any) -> float | str:
    """A temperature option as a float, or "auto"."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"--{name} must be a positive number or 'auto', got {value!r}.") from None


class DistillationTrainer(Trainer):
    """Trainer whose step is: collated groups -> student ``[B, N]`` scores -> loss against the teacher ``[B, N]``.

    Subclasses set :attr:`scorer` and :meth:`build_collator`; everything else is shared.

    Args:
        model: the student, a plain ``transformers`` (or PEFT) model.
        args: :class:`DistillationArguments`.
        train_dataset / eval_dataset: ``datasets.Dataset`` with columns ``query``, ``passages``, ``scores``,
            ``labels`` (see :func:`hf_distill.data.load_ranking_dataset`); ``eval_dataset`` may be a dict of them.
        processing_class: the student's tokenizer.
        loss_fn: optional callable ``(student, teacher, mask, labels) -> scalar`` replacing ``args.loss``.
    """

    scorer: Any = None

    def __init__(
        self,
        model: torch.nn.Module,
        args: DistillationArguments,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        data_collator=None,
        loss_fn: Callable[..., torch.Tensor] | None = None,
        compute_metrics=compute_ranking_metrics,
        **kwargs: Any,
    ) -> None:
        if not isinstance(args, DistillationArguments):
            raise TypeError("args must be DistillationArguments (hf_distill.trainer.DistillationArguments).")
        if processing_class is None and data_collator is None:
            raise ValueError("pass processing_class=<the student's tokenizer> so the trainer can build its collator.")
        loss_options = args.loss_options()
        if loss_fn is None:
            loss_options = self.resolve_loss_options(args, train_dataset if train_dataset is not None else eval_dataset)
        self.loss_fn = loss_fn or DistillationLoss(
            args.loss,
            hard_label_weight=args.hard_label_weight,
            hard_label_temperature=self.resolve_hard_label_temperature(args, loss_options),
            **loss_options,
        )
        dropout = args.dropout_probability()
        if dropout is not None:
            if set_dropout(model, dropout):
                logger.info(
                    "student dropout set to %g for training (--dropout; LoRA's own lora_dropout is kept; the saved "
                    "config keeps its own)", dropout,
                )
        _warn_on_default_learning_rate(model, args)
        if self.scorer is None:
            self.scorer = self.build_scorer(args, model)
        needs_pairs = args.loss not in POINTWISE_LOSSES
        if train_dataset is not None:
            with args.main_process_first(desc="preparing the training data"):  # the others read its cache
                train_dataset = self._prepare_dataset(train_dataset, processing_class, args, "train", needs_pairs)
            if GROUP_INDEX_COLUMN not in train_dataset.column_names:
                # Candidate sampling draws from (seed, epoch, this index): the same sample whatever ran before.
                train_dataset = train_dataset.add_column(GROUP_INDEX_COLUMN, list(range(len(train_dataset))))
        if eval_dataset is not None:
            if isinstance(eval_dataset, dict):
                eval_dataset = {
                    name: self._prepare_dataset(ds, processing_class, args, f"eval '{name}'", False)
                    for name, ds in eval_dataset.items()
                }
            else:
                eval_dataset = self._prepare_dataset(eval_dataset, processing_class, args, "eval", False)
        self.eval_data_collator = None
        if data_collator is None:
            data_collator = self.build_collator(processing_class, args, training=True)
            self.eval_data_collator = self.build_collator(processing_class, args, training=False)
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            data_collator=data_collator,
            compute_metrics=compute_metrics,
            **kwargs,
        )
        if args.dataloader_persistent_workers and args.dataloader_num_workers > 0:
            raise ConfigError(
                "--dataloader_persistent_workers keeps each worker's copy of the collator from the first epoch, so "
                "candidate samples would stop changing with the epoch and a resume would not be exact. Fix: drop it "
                "(workers restart each epoch; collation is cheap next to the student's forward)."
            )
        if args.gradient_cache and (self.is_deepspeed_enabled or self.is_fsdp_enabled):
            raise ConfigError(
                "--gradient_cache cannot run under DeepSpeed or FSDP (they expect one backward per step). "
                "Fix: drop --gradient_cache, or launch with DDP (accelerate_configs/multi_gpu.yaml)."
            )
        # Our loss is a per-batch mean: let the Trainer divide it by the accumulation steps itself.
        self.model_accepts_loss_kwargs = False
        self.loss_is_scaled_for_ga = False
        self._token_counts = torch.zeros(2, dtype=torch.float64)  # real, padded since the last log
        self._length_sampler: EpochSeededLengthGroupedSampler | None = None
        self._non_embedding_parameters: int | None = None  # counted on first use (floating_point_ops)
        self.add_callback(_EpochSeedCallback(self))

    def set_sampling_epoch(self, epoch: int) -> None:
        """Tell the candidate sampler and the length-grouped sampler which epoch is starting.

        Both draw from ``(seed, epoch)`` (and the group's index), never from the global random state, so a run
        resumed from any checkpoint, mid-epoch included, sees exactly the batches and candidates of the
        uninterrupted run, and every DDP rank draws the same permutation.
        """
        for collator in (self.data_collator, self.eval_data_collator):
            if hasattr(collator, "set_epoch"):
                collator.set_epoch(epoch)
        if self._length_sampler is not None:
            self._length_sampler.set_epoch(epoch)

    def _get_train_sampler(self, train_dataset=None):
        sampler = super()._get_train_sampler(train_dataset)
        if isinstance(sampler, LengthGroupedSampler) and not isinstance(sampler, EpochSeededLengthGroupedSampler):
            sampler = EpochSeededLengthGroupedSampler.from_sampler(sampler, seed=self._sampling_seed())
            self._length_sampler = sampler
        return sampler

    def _sampling_seed(self) -> int:
        return self.args.data_seed if self.args.data_seed is not None else self.args.seed

    def _prepare_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """The Trainer's device placement, except that teacher scores keep their fp32 dtype.

        Under DeepSpeed, ``Trainer._prepare_input`` casts every floating tensor to the engine's bf16/fp16;
        teacher scores rounded to bf16 tie a quarter of the candidates of a cosine teacher (spread 0.05) and
        move the targets of every loss and the teacher metrics. They are targets, not model inputs.
        """
        targets = {key: inputs[key] for key in FP32_TARGET_KEYS if isinstance(inputs.get(key), torch.Tensor)}
        prepared = super()._prepare_inputs(inputs)
        for key, value in targets.items():
            prepared[key] = value.to(self.args.device)
        return prepared

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        dataset = self.eval_dataset if eval_dataset is None else eval_dataset
        if isinstance(dataset, str):  # the Trainer evaluates a dict of eval sets by name
            dataset = self.eval_dataset[dataset]
        compute_metrics = self.compute_metrics
        if compute_metrics is compute_ranking_metrics and not isinstance(dataset, dict):
            # its warnings name the eval set (a dict of sets comes back here once per set, by name)
            self.compute_metrics = functools.partial(
                compute_ranking_metrics, eval_set_name=metric_key_prefix.removeprefix("eval_")
            )
        try:
            metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        finally:
            self.compute_metrics = compute_metrics
        if not isinstance(dataset, dict) and not has_teacher_scores(dataset):
            # A labels-only eval set (MTEB test rows): the student is measured against the labels; there is no
            # teacher to agree with, and the distillation loss has no target.
            unscored = [f"{metric_key_prefix}_{key}" for key in TEACHER_METRIC_KEYS]
            metrics = {
                key: value for key, value in metrics.items()
                if key not in unscored and not key.startswith(f"{metric_key_prefix}_teacher_")
            }
        return metrics

    @classmethod
    def resolve_hard_label_temperature(cls, args: DistillationArguments, loss_options: dict[str, Any]) -> float:
        """``hard_label_temperature`` as a number; ``auto`` is the student temperature of the loss (or of the
        student type, for losses without one)."""
        value = _temperature("hard_label_temperature", args.hard_label_temperature)
        if value != "auto":
            return value
        student_temperature = loss_options.get("student_temperature")
        if isinstance(student_temperature, (int, float)):
            return float(student_temperature)
        return cls.auto_student_temperature(args)

    @classmethod
    def resolve_loss_options(cls, args: DistillationArguments, scored_dataset=None) -> dict[str, Any]:
        """``args.loss_options()`` with the "auto" temperatures resolved: the teacher's from the scores of
        ``scored_dataset`` (a dataset or a dict of them), the student's from :meth:`auto_student_temperature`."""
        loss_options = args.loss_options()
        if loss_options.get("teacher_temperature") == "auto":
            if isinstance(scored_dataset, dict):
                scored_dataset = next(iter(scored_dataset.values()), None)
            has_scores = scored_dataset is not None and has_teacher_scores(scored_dataset)
            spread = teacher_score_spread(scored_dataset["scores"]) if has_scores else 1.0  # no scores: fails later
            loss_options["teacher_temperature"] = spread
            logger.info("teacher_temperature auto = %.4g (mean per-query std of the teacher scores)", spread)
        if loss_options.get("student_temperature") == "auto":
            loss_options["student_temperature"] = cls.auto_student_temperature(args)
        return loss_options

    # -- hooks for subclasses -----------------------------------------------------------------------------------------
    @classmethod
    def auto_student_temperature(cls, args: DistillationArguments) -> float:
        """``student_temperature="auto"``: 1 for students that output logits."""
        return 1.0

    def build_scorer(self, args: DistillationArguments, model: torch.nn.Module):
        raise NotImplementedError

    def build_collator(self, tokenizer, args: DistillationArguments, training: bool):
        raise NotImplementedError

    @staticmethod
    def _collator_kwargs(args: DistillationArguments, training: bool) -> dict[str, Any]:
        return {
            "max_length": args.max_length,
            "group_size": args.group_size if training else None,
            "top_fraction": args.top_fraction,
            "micro_batch_max_tokens": args.micro_batch_max_tokens,
            "micro_batch_overhead_tokens": args.micro_batch_overhead_tokens,
            # Candidates are drawn from (seed, epoch, group index): see set_sampling_epoch.
            "seed": args.data_seed if args.data_seed is not None else args.seed,
            "keep_labelled_positives": args.keep_labelled_positives,
        }

    # -- data ------------------------------------------------------------------------------------------------------------
    @staticmethod
    def _prepare_dataset(dataset, tokenizer, args: DistillationArguments, name: str, needs_pairs: bool):
        # Evaluation needs labels, not a teacher: an eval set without teacher scores is measured on its labels.
        required = {"query", "passages", "scores"} if name == "train" else {"query", "passages"}
        missing = required - set(dataset.column_names)
        if missing:
            raise ValueError(
                f"{name} dataset lacks column(s) {sorted(missing)} (has {dataset.column_names}). "
                "Fix: load it with hf_distill.data.load_ranking_dataset(path), which converts every supported format."
            )
        if needs_pairs:
            before = len(dataset)
            dataset = dataset.filter(lambda row: len(row["passages"]) >= 2, desc=f"dropping single-candidate groups ({name})")
            dropped = before - len(dataset)
            if dropped:
                logger.warning(
                    "%s: skipped %d of %d groups with a single candidate: loss %r needs at least two per query.",
                    name, dropped, before, args.loss,
                )
            if len(dataset) == 0:
                raise ValueError(f"{name} dataset has no group with two or more candidates; loss {args.loss!r} needs them.")
        if (
            args.train_sampling_strategy == "group_by_length"
            and name == "train"
            and args.length_column_name not in dataset.column_names
            and tokenizer is not None
        ):
            dataset = dataset.map(
                _group_length_fn(tokenizer), batched=True, desc="measuring group lengths for length-grouped batches"
            )
        return dataset

    def _get_eval_sampler(self, eval_dataset):
        # Predictions must come back in dataset order, whatever the training sampler is.
        return torch.utils.data.SequentialSampler(eval_dataset)

    def get_eval_dataloader(self, eval_dataset=None):
        return self._with_collator(self.eval_data_collator, super().get_eval_dataloader, eval_dataset)

    def get_test_dataloader(self, test_dataset):
        return self._with_collator(self.eval_data_collator, super().get_test_dataloader, test_dataset)

    def _with_collator(self, collator, build, dataset):
        if collator is None:
            return build(dataset)
        train_collator, self.data_collator = self.data_collator, collator
        try:
            return build(dataset)
        finally:
            self.data_collator = train_collator

    # -- the step --------------------------------------------------------------------------------------------------------
    def score_groups(self, model: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        """Student scores ``[B, N]`` for a collated batch: one forward per micro-batch of unique items."""
        micro_batches = inputs["micro_batches"]
        extra = self._micro_batches_to_pad(len(micro_batches))
        scores = self.scorer.score_groups(model, micro_batches, inputs)
        if extra:
            # Sharded training (ZeRO-3, FSDP) gathers parameters in every forward: all ranks must run the same
            # number of forwards (and backwards), so a rank with fewer micro-batches runs one-row dummies whose
            # result enters the graph with weight 0.
            dummy = {key: value[:1] for key, value in micro_batches[0].items()}
            for _ in range(extra):
                scores = scores + 0.0 * self.scorer.forward_items(model, dummy).sum()
        return scores

    def _micro_batches_to_pad(self, local_count: int) -> int:
        if self.args.world_size <= 1 or not self._parameters_are_sharded():
            return 0
        count = torch.tensor([local_count], device=self.args.device)
        count = self.accelerator.reduce(count, reduction="max") if hasattr(self.accelerator, "reduce") else count
        return int(count.item()) - local_count

    def _parameters_are_sharded(self) -> bool:
        if getattr(self, "is_fsdp_enabled", False):
            return True
        if getattr(self, "is_deepspeed_enabled", False):
            plugin = self.accelerator.state.deepspeed_plugin
            return plugin is not None and plugin.zero_stage == 3
        return False

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        student_scores = self.score_groups(model, inputs)
        loss = self.loss_fn(
            student_scores, inputs["teacher_scores"], inputs["candidate_mask"], inputs["relevance_labels"]
        )
        if model.training:
            self._token_counts += torch.tensor(
                [float(inputs["num_real_tokens"]), float(inputs["num_padded_tokens"])], dtype=torch.float64
            )
        return (loss, student_scores) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        if not self.args.gradient_cache:
            return super().training_step(model, inputs, num_items_in_batch)
        return self._gradient_cache_step(model, inputs)

    def _gradient_cache_step(self, model, inputs) -> torch.Tensor:
        r"""One step in two passes (GradCache, Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size
        under Memory Limited Setup"): with :math:`r_m` the output of micro-batch m (pair scores or embeddings)
        and :math:`\mathcal{L}(r_1, \dots, r_M)`, the chain rule gives
        :math:`\nabla_\theta \mathcal{L} = \sum_m (\partial \mathcal{L} / \partial r_m)^\top \partial r_m / \partial \theta`,
        so pass 1 computes every :math:`r_m` without a graph and :math:`g_m = \partial \mathcal{L} / \partial r_m`,
        pass 2 recomputes each :math:`r_m` with its graph and backpropagates :math:`g_m^\top r_m`. Dropout masks
        are replayed from pass 1's random state, so the gradients equal the one-pass ones."""
        model.train()
        inputs = self._prepare_inputs(inputs)
        micro_batches = inputs["micro_batches"]
        states, outputs = [], []
        with torch.no_grad(), self.compute_loss_context_manager():
            for features in micro_batches:
                states.append(_RandomState())
                outputs.append(self.scorer.forward_items(model, features))
        cached = [output.detach().requires_grad_() for output in outputs]
        with self.compute_loss_context_manager():
            scores = self.scorer.combine(cached, inputs)
            loss = self.loss_fn(scores, inputs["teacher_scores"], inputs["candidate_mask"], inputs["relevance_labels"])
        loss = loss / self.current_gradient_accumulation_steps
        gradients = torch.autograd.grad(loss, cached)
        last = len(micro_batches) - 1
        for m, (features, gradient, state) in enumerate(zip(micro_batches, gradients, states)):
            # Gradients are all-reduced once per step, after the last micro-batch's backward (DDP).
            sync = contextlib.nullcontext() if m == last else self.accelerator.no_sync(model)
            with sync, state.replay(), self.compute_loss_context_manager():
                output = self.scorer.forward_items(model, features)
                self.accelerator.backward((output.float() * gradient.float()).sum())
        self._token_counts += torch.tensor(
            [float(inputs["num_real_tokens"]), float(inputs["num_padded_tokens"])], dtype=torch.float64
        )
        return loss.detach()

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        teacher_scores = inputs["teacher_scores"]
        scored = bool(torch.isfinite(teacher_scores[inputs["candidate_mask"]]).all())
        with torch.no_grad():
            student_scores = self.score_groups(model, inputs)
            loss = None  # labels-only groups (no teacher scores) have no distillation loss
            if scored:
                loss = self.loss_fn(
                    student_scores, teacher_scores, inputs["candidate_mask"], inputs["relevance_labels"]
                ).detach()
        if prediction_loss_only:
            return loss, None, None
        targets = (
            torch.nan_to_num(teacher_scores.float(), nan=0.0),
            inputs["relevance_labels"],
            inputs["candidate_mask"].long(),
        )
        return loss, student_scores.detach().float(), targets

    def floating_point_ops(self, inputs: dict[str, Any]) -> int:
        """Training FLOPs of one batch for ``total_flos``: 6 x non-embedding parameters x padded tokens (the
        estimate transformers uses, counted on the micro-batches, which carry the token ids here)."""
        if self._non_embedding_parameters is None:
            model = self.accelerator.unwrap_model(self.model)
            embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
            # ds_numel: a ZeRO-3 parameter's full size (its local tensor is an empty shard)
            self._non_embedding_parameters = sum(
                getattr(p, "ds_numel", p.numel()) for p in model.parameters() if id(p) not in embeddings
            )
        return 6 * self._non_embedding_parameters * int(inputs.get("num_padded_tokens", 0))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        real, padded = self._token_counts.tolist()
        if "loss" in logs and padded > 0:
            logs["real_token_share"] = round(real / padded, 4)
            self._token_counts.zero_()
        super().log(logs, start_time)


def _group_length_fn(tokenizer):
    """Average (query + passage) token count of a group: the key of length-grouped batching."""

    def lengths(batch: dict[str, list]) -> dict[str, list[int]]:
        query_lengths = [len(ids) for ids in tokenizer(batch["query"], add_special_tokens=False)["input_ids"]]
        result = []
        for query_length, passages in zip(query_lengths, batch["passages"]):
            passage_lengths = [len(ids) for ids in tokenizer(passages, add_special_tokens=False)["input_ids"]]
            result.append(query_length + sum(passage_lengths) // max(len(passage_lengths), 1))
        return {"length": result}

    return lengths


class RerankerDistillationTrainer(DistillationTrainer):
    """Distil into a cross-encoder (``AutoModelForSequenceClassification``, ``num_labels=1``), or into a causal-LM
    yes/no reranker (``AutoModelForCausalLM``, Qwen3-Reranker style, ``--student_type causal_lm`` or auto).

    Example::

        model = AutoModelForSequenceClassification.from_pretrained("BAAI/bge-reranker-v2-m3", num_labels=1)
        tokenizer = AutoTokenizer.from_pretrained("BAAI/bge-reranker-v2-m3")
        args = DistillationArguments(output_dir="out", loss="listnet", group_size=16)
        trainer = RerankerDistillationTrainer(model=model, args=args, processing_class=tokenizer,
                                              train_dataset=load_ranking_dataset("scores.jsonl"))
        trainer.train()
    """

    def build_scorer(self, args: DistillationArguments, model: torch.nn.Module):
        if resolve_student_type(args.student_type, model) == "causal_lm":
            return CausalYesNoScorer()  # its yes/no token ids come with the tokenizer, in build_collator
        return CrossEncoderScorer()

    def build_collator(self, tokenizer, args: DistillationArguments, training: bool):
        if isinstance(self.scorer, CausalYesNoScorer):
            if self.scorer.yes_token_id is None:
                self.scorer = CausalYesNoScorer.from_tokenizer(tokenizer)
            return Qwen3RerankerCollator(
                tokenizer, **self._collator_kwargs(args, training), instruction=args.instruction
            )
        return CrossEncoderCollator(tokenizer, **self._collator_kwargs(args, training))

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        if self.processing_class is not None:
            if isinstance(self.scorer, CausalYesNoScorer):
                # A saved causal-LM student renders (query, document) pairs as its training prompt, so
                # sentence_transformers.CrossEncoder(output_dir) gives the scores it was trained to give.
                self.processing_class.chat_template = qwen3_reranker_chat_template(self.args.instruction)
            # Served at the length it was trained and measured at, not the checkpoint's (8192 for bge-m3's
            # family): CrossEncoder(output_dir) truncates where training truncated.
            self.processing_class.model_max_length = self.args.max_length
        super()._save(output_dir, state_dict)


class EmbeddingDistillationTrainer(DistillationTrainer):
    """Distil into a bi-encoder (``AutoModel`` + pooling + optional normalisation).

    Saved checkpoints also carry the sentence-transformers module files (``modules.json``, ``1_Pooling``,
    ``2_Normalize``), so ``SentenceTransformer(output_dir)`` gives the embeddings the student was trained with.
    """

    @classmethod
    def auto_student_temperature(cls, args: DistillationArguments) -> float:
        """``student_temperature="auto"``: 0.05 for bounded scores in [-1, 1] (cosine, or dot of normalised
        embeddings, at similarity_scale 1), else 1."""
        bounded = args.similarity == "cosine" or (args.similarity == "dot" and args.normalize_embeddings)
        return 0.05 if bounded and args.similarity_scale == 1.0 else 1.0

    def build_scorer(self, args: DistillationArguments, model: torch.nn.Module):
        pooling = args.pooling
        if pooling == "auto":
            name_or_path = getattr(getattr(model, "config", None), "_name_or_path", None)
            try:
                declared = sentence_transformers_pooling(name_or_path)
            except ValueError as error:
                raise ConfigError(str(error)) from None
            if declared is None:
                raise ConfigError(
                    f"--pooling auto: {name_or_path or 'the student'} declares no sentence-transformers pooling "
                    "(no 1_Pooling/config.json in its folder, on the Hub or in the local Hub cache). Fix: pass "
                    "--pooling cls, mean or last, as the model was trained (bge: cls, all-MiniLM / e5: mean, "
                    "Qwen3-Embedding: last)."
                )
            pooling = declared[0]
            logger.info("bi-encoder pooling: %s (from %s's 1_Pooling/config.json)", pooling, name_or_path)
        return BiEncoderScorer(
            pooling=pooling,
            normalize=args.normalize_embeddings,
            similarity=args.similarity,
            scale=args.similarity_scale,
        )

    def build_collator(self, tokenizer, args: DistillationArguments, training: bool):
        return BiEncoderCollator(
            tokenizer,
            **self._collator_kwargs(args, training),
            query_prefix=args.query_prefix,
            passage_prefix=args.passage_prefix,
        )

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        super()._save(output_dir, state_dict)
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if self.args.should_save:
            write_sentence_transformers_config(output_dir, self.scorer, self.args)


def write_sentence_transformers_config(output_dir: str, scorer: BiEncoderScorer, args: DistillationArguments) -> None:
    """Write the files that make ``SentenceTransformer(output_dir)`` reproduce the student's embeddings."""
    hidden_size = None
    config_path = os.path.join(output_dir, "config.json")
    if os.path.exists(config_path):
        with open(config_path, encoding="utf-8") as f:
            hidden_size = json.load(f).get("hidden_size")
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]
    modules.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"})
    if scorer.normalize or scorer.similarity == "cosine":
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        os.makedirs(os.path.join(output_dir, "2_Normalize"), exist_ok=True)
    os.makedirs(os.path.join(output_dir, "1_Pooling"), exist_ok=True)
    pooling = {
        "word_embedding_dimension": hidden_size,
        "pooling_mode_cls_token": scorer.pooling == "cls",
        "pooling_mode_mean_tokens": scorer.pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": scorer.pooling == "last",
        "include_prompt": True,
    }
    files = {
        "modules.json": modules,
        "1_Pooling/config.json": pooling,
        "sentence_bert_config.json": {"max_seq_length": args.max_length, "do_lower_case": False},
        "config_sentence_transformers.json": {
            "similarity_fn_name": "cosine" if scorer.similarity == "cosine" else "dot",
            "prompts": {"query": args.query_prefix, "document": args.passage_prefix},
            "default_prompt_name": None,
        },
    }
    for name, content in files.items():
        with open(os.path.join(output_dir, name), "w", encoding="utf-8") as f:
            json.dump(content, f, indent=2)
