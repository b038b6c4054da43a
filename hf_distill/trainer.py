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
import logging
import math
from collections.abc import Callable
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase, Trainer, TrainerCallback
from transformers.trainer_pt_utils import LengthGroupedSampler

from .collators import (
    GROUP_INDEX_COLUMN,
    BiEncoderCollator,
    CrossEncoderCollator,
    Qwen3RerankerCollator,
    RankingCollator,
)
from .errors import ConfigError
from .kinds import CAUSAL_LM
from .losses import DistillationLoss, teacher_score_spread
from .metrics import compute_ranking_metrics
from .prompts import qwen3_reranker_chat_template
from .st_format import declared_pooling, write_sentence_transformers_config
from .students import (
    BiEncoderScorer,
    CausalYesNoScorer,
    CrossEncoderScorer,
    Scorer,
    has_fresh_head,
    resolve_student_type,
    set_dropout,
)
from .training_args import DistillationArguments, parse_temperature

logger = logging.getLogger("hf_distill")

POINTWISE_LOSSES = ("mse",)
# Collated tensors that are targets, not model inputs: they keep fp32 under DeepSpeed's bf16/fp16 input cast.
FP32_TARGET_KEYS = ("teacher_scores",)
# Metrics that compare with a teacher: left out for an eval set that has only labels.
TEACHER_METRIC_KEYS = ("loss", "spearman", "kendall")
# A student this large is a pretrained model: the layer-cut default learning rate would wreck it.
LARGE_STUDENT_PARAMETERS = 100_000_000


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


def has_teacher_scores(dataset: Any) -> bool:
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
            default,
            trainable / 1e6,
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
    def from_sampler(cls, sampler: LengthGroupedSampler, seed: int) -> EpochSeededLengthGroupedSampler:
        return cls(sampler.batch_size, lengths=sampler.lengths, seed=seed)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)

    def __iter__(self):
        self.set_epoch(self.epoch)  # the same permutation each time this epoch is iterated
        return super().__iter__()


class _EpochSeedCallback(TrainerCallback):
    """Passes the starting epoch to the trainer's samplers (the Trainer's loop variable is not exposed)."""

    def __init__(self, trainer: DistillationTrainer) -> None:
        self.trainer = trainer

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # state.epoch is the float progress: 0.0 at the start, 1.5 when resuming halfway through epoch 2.
        self.trainer.set_sampling_epoch(int(math.floor(state.epoch or 0.0)))


class DistillationTrainer(Trainer):
    """Trainer whose step is: collated groups -> student ``[B, N]`` scores -> loss against the teacher ``[B, N]``.

    Subclasses implement :meth:`build_scorer` and :meth:`build_collator`; everything else is shared.

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
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        data_collator: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None,
        loss_fn: Callable[..., torch.Tensor] | None = None,
        compute_metrics: Callable[..., dict[str, float]] | None = compute_ranking_metrics,
        **kwargs: Any,
    ) -> None:
        if not isinstance(args, DistillationArguments):
            raise TypeError("args must be DistillationArguments (hf_distill.trainer.DistillationArguments).")
        if processing_class is None and data_collator is None:
            raise ConfigError("pass processing_class=<the student's tokenizer> so the trainer can build its collator.")
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
                    "config keeps its own)",
                    dropout,
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
        self._lengthen_short_run(model)

    def train_steps_per_epoch(self) -> int | None:
        """Optimizer steps in one epoch of this run's data and processes (None: no sized train set).

        The Trainer's own count (``set_initial_training_values``): each rank gets ``ceil(batches / world_size)``
        batches (accelerate's even batches), one update per ``gradient_accumulation_steps`` of them.
        """
        if self.train_dataset is None or not hasattr(self.train_dataset, "__len__"):
            return None
        args = self.args
        batch = args.per_device_train_batch_size
        batches = (
            len(self.train_dataset) // batch if args.dataloader_drop_last else -(-len(self.train_dataset) // batch)
        )
        per_rank = -(-batches // max(args.world_size, 1))
        return max(-(-per_rank // args.gradient_accumulation_steps), 1)

    def planned_train_steps(self) -> int | None:
        """Optimizer steps that ``num_train_epochs`` gives on this run's data and processes (None: no train set)."""
        per_epoch = self.train_steps_per_epoch()
        return None if per_epoch is None else math.ceil(self.args.num_train_epochs * per_epoch)

    def _lengthen_short_run(self, model: torch.nn.Module) -> None:
        """``--min_train_steps``: train a short run for that many steps instead of its epochs (logged)."""
        minimum = self.args.min_train_steps_for(has_fresh_head(model))
        planned = self.planned_train_steps()
        if minimum <= 0 or self.args.max_steps > 0 or planned is None or planned >= minimum:
            return
        self.args.max_steps = minimum
        logger.warning(
            "%d training groups give %d optimizer steps in %g epoch(s); training %d steps instead (%.1f epochs, "
            "--min_train_steps %s): a fresh head needs them to leave the uniform-score plateau (BENCHMARKS.md, "
            '"Fresh head"). --min_train_steps 0 keeps the epochs; --max_steps N sets the length.',
            len(self.train_dataset),
            planned,
            self.args.num_train_epochs,
            minimum,
            minimum / self.train_steps_per_epoch(),
            self.args.min_train_steps,
        )

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

    def evaluate(
        self, eval_dataset: Any = None, ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval"
    ) -> dict[str, float]:
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
                key: value
                for key, value in metrics.items()
                if key not in unscored and not key.startswith(f"{metric_key_prefix}_teacher_")
            }
        return metrics

    @classmethod
    def resolve_hard_label_temperature(cls, args: DistillationArguments, loss_options: dict[str, Any]) -> float:
        """``hard_label_temperature`` as a number; ``auto`` is the student temperature of the loss (or of the
        student type, for losses without one)."""
        value = parse_temperature("hard_label_temperature", args.hard_label_temperature)
        if value != "auto":
            return value
        student_temperature = loss_options.get("student_temperature")
        if isinstance(student_temperature, (int, float)):
            return float(student_temperature)
        return cls.auto_student_temperature(args)

    @classmethod
    def resolve_loss_options(cls, args: DistillationArguments, scored_dataset: Any = None) -> dict[str, Any]:
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

    def build_scorer(self, args: DistillationArguments, model: torch.nn.Module) -> Scorer:
        raise NotImplementedError

    def build_collator(
        self, tokenizer: PreTrainedTokenizerBase, args: DistillationArguments, training: bool
    ) -> RankingCollator:
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
            raise ConfigError(
                f"{name} dataset lacks column(s) {sorted(missing)} (has {dataset.column_names}). "
                "Fix: load it with hf_distill.data.load_ranking_dataset(path), which converts every supported format."
            )
        if needs_pairs:
            before = len(dataset)
            dataset = dataset.filter(
                lambda row: len(row["passages"]) >= 2, desc=f"dropping single-candidate groups ({name})"
            )
            dropped = before - len(dataset)
            if dropped:
                logger.warning(
                    "%s: skipped %d of %d groups with a single candidate: loss %r needs at least two per query.",
                    name,
                    dropped,
                    before,
                    args.loss,
                )
            if len(dataset) == 0:
                raise ConfigError(
                    f"{name} dataset has no group with two or more candidates; loss {args.loss!r} needs them."
                )
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

    def get_eval_dataloader(self, eval_dataset: Any = None) -> Any:
        return self._with_collator(self.eval_data_collator, super().get_eval_dataloader, eval_dataset)

    def get_test_dataloader(self, test_dataset: Any) -> Any:
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

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        student_scores = self.score_groups(model, inputs)
        loss = self.loss_fn(
            student_scores, inputs["teacher_scores"], inputs["candidate_mask"], inputs["relevance_labels"]
        )
        if model.training:
            self._token_counts += torch.tensor(
                [float(inputs["num_real_tokens"]), float(inputs["num_padded_tokens"])], dtype=torch.float64
            )
        return (loss, student_scores) if return_outputs else loss

    def training_step(
        self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None
    ) -> torch.Tensor:
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

    def prediction_step(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, Any]:
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

    def build_scorer(self, args: DistillationArguments, model: torch.nn.Module) -> Scorer:
        if resolve_student_type(args.student_type, model) == CAUSAL_LM:
            return CausalYesNoScorer()  # its yes/no token ids come with the tokenizer, in build_collator
        return CrossEncoderScorer()

    def build_collator(
        self, tokenizer: PreTrainedTokenizerBase, args: DistillationArguments, training: bool
    ) -> RankingCollator:
        if self.scorer.kind == CAUSAL_LM:
            if self.scorer.yes_token_id is None:
                self.scorer = CausalYesNoScorer.from_tokenizer(tokenizer)
            return Qwen3RerankerCollator(
                tokenizer, **self._collator_kwargs(args, training), instruction=args.instruction
            )
        return CrossEncoderCollator(tokenizer, **self._collator_kwargs(args, training))

    def _save(self, output_dir: str | None = None, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        if self.processing_class is not None:
            if self.scorer.kind == CAUSAL_LM:
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

    def build_scorer(self, args: DistillationArguments, model: torch.nn.Module) -> Scorer:
        pooling = args.pooling
        if pooling == "auto":
            name_or_path = getattr(getattr(model, "config", None), "_name_or_path", None)
            try:
                declared = declared_pooling(name_or_path)
            except ConfigError as error:
                raise ConfigError(f"{error} (as a bi-encoder student: pass --pooling to override).") from None
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

    def build_collator(
        self, tokenizer: PreTrainedTokenizerBase, args: DistillationArguments, training: bool
    ) -> RankingCollator:
        return BiEncoderCollator(
            tokenizer,
            **self._collator_kwargs(args, training),
            query_prefix=args.query_prefix,
            passage_prefix=args.passage_prefix,
        )

    def _save(self, output_dir: str | None = None, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        super()._save(output_dir, state_dict)
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if self.args.should_save:
            write_student_sentence_transformers_config(output_dir, self.scorer, self.args)


def write_student_sentence_transformers_config(
    output_dir: str, scorer: BiEncoderScorer, args: DistillationArguments
) -> None:
    """The sentence-transformers files of a bi-encoder student trained with ``scorer`` and ``args``."""
    write_sentence_transformers_config(
        output_dir,
        pooling=scorer.pooling,
        normalize=scorer.normalize,
        similarity=scorer.similarity,
        max_length=args.max_length,
        query_prefix=args.query_prefix,
        passage_prefix=args.passage_prefix,
    )
