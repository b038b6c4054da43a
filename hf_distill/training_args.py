"""``DistillationArguments``: ``transformers.TrainingArguments`` plus what distillation needs.

Every field is also a ``--flag`` of the recipes and a key of their YAML configs. The trainer that reads them is
:mod:`hf_distill.trainer`; the measurements behind the defaults are in ``BENCHMARKS.md``.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainingArguments

from .errors import ConfigError
from .losses import get_loss

__all__ = ["FRESH_HEAD_MIN_TRAIN_STEPS", "DistillationArguments", "parse_temperature"]

# Optimizer steps a fresh reranker head gets at least, by default (BENCHMARKS.md, "Fresh head").
FRESH_HEAD_MIN_TRAIN_STEPS = 100


def parse_temperature(name: str, value: Any) -> float | str:
    """A temperature option (``--{name}``) as a float, or ``"auto"``; anything else is a :class:`ConfigError`."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"--{name} must be a positive number or 'auto', got {value!r}.") from None


@dataclass
class DistillationArguments(TrainingArguments):
    """``TrainingArguments`` plus what distillation needs. Every field is also a ``--flag`` of the recipes.

    Args:
        loss: a registered loss (:mod:`hf_distill.losses`): ``mse``, ``margin_mse``, ``margin_mse_triplets``,
            ``kl``, ``ranknet``, ``listnet``, ``lambdaloss`` or a name given to ``@register_loss``.
        gradient_cache: GradCache (Gao et al. 2021): score every micro-batch without autograd, take the loss's
            gradient with respect to the scores (or embeddings), then run forward + backward per micro-batch
            with it. Same gradients, one more forward per step, activation memory of one micro-batch. Not with
            DeepSpeed or FSDP.
        dropout: dropout of every dropout layer while the student trains, a number or ``keep`` (the
            checkpoint's own). Default 0: dropout noise drowns the small score differences a student starts
            from (BENCHMARKS.md, "Ablation"). The saved config keeps the checkpoint's values.
        teacher_temperature: softmax temperature of the teacher in listwise losses (``kl``, ``listnet``; in
            ``lambdaloss`` the teacher gap of one relevance grade), or
            ``auto`` = the mean per-query standard deviation of the training teacher scores, so cosine (spread
            ~0.15) and logit (spread ~3) teachers get the same softness.
        student_temperature: softmax temperature of the student in listwise losses, or ``auto`` = 1 for logit
            students and 0.05 for bi-encoders with scores bounded in [-1, 1] (the scale 20 of
            sentence-transformers' MultipleNegativesRankingLoss). Only the loss sees it; ``kl`` is multiplied by
            ``T_s^2`` (Hinton et al.).
        margin_top_k, margin_num_negatives: ``margin_mse_triplets`` only: the teacher's ``top_k`` candidates
            act as positives, each paired with the ``num_negatives`` ranked right after them.
        loss_kwargs: further keyword arguments of the loss, as a JSON object.
        hard_label_weight, hard_label_temperature: a listwise cross-entropy on the gold labels, added when the
            data has labels (weight 0 = off); its temperature ``auto`` follows the student temperature.
        group_size, top_fraction, keep_labelled_positives: each training step keeps ``group_size`` candidates
            per query, ``top_fraction`` of them the teacher's best, the rest sampled; labelled positives are
            kept whatever their teacher rank unless ``keep_labelled_positives`` is off. Evaluation uses all.
        max_length: token limit of a pair (cross-encoder, causal LM) or a text (bi-encoder).
        micro_batch_max_tokens, micro_batch_overhead_tokens: items are length-sorted and cut into forwards of
            at most ``micro_batch_max_tokens`` padded tokens; one more forward is worth
            ``micro_batch_overhead_tokens`` of padding. This bounds one forward, not the step: without
            ``gradient_cache`` every micro-batch's activations live until the backward.
        pooling, normalize_embeddings, similarity, similarity_scale, query_prefix, passage_prefix: bi-encoder
            students: ``score = similarity_scale * sim(pool(f(prefix + q)), pool(f(prefix + p)))``; pooling
            ``auto`` reads the checkpoint's sentence-transformers files (local, Hub or local Hub cache).
        student_type, instruction: reranker students: ``cross_encoder`` (one logit), ``causal_lm``
            (Qwen3-Reranker style ``logit(yes) - logit(no)``, with ``instruction`` as its ``<Instruct>`` line)
            or ``auto`` (``causal_lm`` for a ``*ForCausalLM`` checkpoint).
        min_train_steps: a run whose epochs give fewer optimizer steps trains this many instead (as
            ``max_steps``: the data repeated, the schedule over all of them); ``auto`` = 100
            (``FRESH_HEAD_MIN_TRAIN_STEPS``) for a reranker whose one-logit head was freshly initialised, else 0
            (off); ignored when ``max_steps`` is set. A fresh head on a mean-pooling checkpoint sits at uniform
            scores (listwise loss ln N) until Adam has grown its logits' spread from ~1e-4 to ~1, which 25 steps
            (200 queries, 8 per step) do not do (BENCHMARKS.md, "Fresh head").
        learning_rate: 3e-4 (not the Trainer's 5e-5) for a small layer-cut student with a fresh head; the seed
            configs fine-tune pretrained students at 1e-5 to 2e-5 (BENCHMARKS.md, "Seeds").
        remove_unused_columns, ddp_broadcast_buffers, ddp_timeout: Trainer fields with the values distillation
            needs (see each field's help). ``train_sampling_strategy`` keeps the Trainer's ``random``: batches
            of queries drawn by similar length (``group_by_length``) trained a fresh-head reranker to MAP 0.400
            where random batches reached 0.530 (200 queries, 100 steps), and buy no padding here, because each
            step's pairs are length-sorted into micro-batches anyway (97.0% vs 96.7% real tokens).
    """

    # --- loss ---------------------------------------------------------------------------------------------------
    loss: str = field(
        default="listnet",
        metadata={
            "help": "A registered loss: mse, margin_mse, margin_mse_triplets, kl, ranknet, listnet, lambdaloss, or yours."
        },
    )
    gradient_cache: bool = field(
        default=False,
        metadata={
            "help": "GradCache: same gradients with the activation memory of one micro-batch (not DeepSpeed/FSDP)."
        },
    )
    dropout: str = field(
        default="0",
        metadata={
            "help": "Dropout probability while training, or keep (the checkpoint's own); the saved config keeps it."
        },
    )
    teacher_temperature: str = field(
        default="auto",
        metadata={
            "help": "Teacher temperature of kl/listnet/lambdaloss, or auto = mean per-query std of the teacher scores."
        },
    )
    student_temperature: str = field(
        default="auto",
        metadata={
            "help": "Student temperature of kl/listnet/lambdaloss, or auto = 1 (logit students), 0.05 (cosine bi-encoders)."
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
        metadata={"help": "Temperature of the hard-label cross-entropy, or auto = the student temperature."},
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
        metadata={"help": "Keep labelled positives whatever their teacher rank when cutting a group to group_size."},
    )
    max_length: int = field(
        default=512, metadata={"help": "Token limit of a (query, passage) pair (cross-encoder) or a text (bi-encoder)."}
    )
    micro_batch_max_tokens: int = field(
        default=16384,
        metadata={"help": "Padded tokens per student forward (bounds one forward; --gradient_cache bounds the step)."},
    )
    micro_batch_overhead_tokens: int = field(
        default=32,
        metadata={"help": "Price of one extra forward in padded tokens when cutting micro-batches (BENCHMARKS.md)."},
    )
    # --- bi-encoder students ------------------------------------------------------------------------------------------
    pooling: str = field(
        default="auto",
        metadata={
            "help": "Bi-encoder pooling: cls, mean, last, or auto (the checkpoint's sentence-transformers files)."
        },
    )
    normalize_embeddings: bool = field(default=True, metadata={"help": "L2-normalise bi-encoder embeddings."})
    similarity: str = field(default="cosine", metadata={"help": "Bi-encoder similarity: cosine or dot."})
    similarity_scale: float = field(default=1.0, metadata={"help": "Bi-encoder score = similarity_scale * similarity."})
    query_prefix: str = field(
        default="", metadata={"help": "Text prepended to queries (bi-encoder), e.g. an instruction."}
    )
    passage_prefix: str = field(default="", metadata={"help": "Text prepended to passages (bi-encoder)."})
    # --- LLM students -------------------------------------------------------------------------------------------------
    student_type: str = field(
        default="auto",
        metadata={"help": "Reranker student: cross_encoder, causal_lm (logit(yes) - logit(no)), or auto (by class)."},
    )
    instruction: str | None = field(
        default=None,
        metadata={"help": "causal_lm students: the <Instruct> line of the Qwen3-Reranker prompt, as for the teacher."},
    )
    # --- how long a short run trains -----------------------------------------------------------------------------
    min_train_steps: str = field(
        default="auto",
        metadata={
            "help": "Train at least this many optimizer steps (repeating the data); auto = "
            f"{FRESH_HEAD_MIN_TRAIN_STEPS} for a reranker with a fresh head, else 0 (off). Ignored with max_steps."
        },
    )
    # --- Trainer defaults that distillation needs -------------------------------------------------------------------
    learning_rate: float = field(
        default=3e-4,
        metadata={"help": "Peak AdamW learning rate: 3e-4 for layer-cut students, 1e-5-2e-5 for pretrained ones."},
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: the collator needs the query/passages/scores columns."}
    )
    ddp_broadcast_buffers: bool | None = field(
        default=False,
        metadata={
            "help": "Kept False: a per-forward buffer broadcast hangs when ranks run unequal micro-batch counts."
        },
    )
    ddp_timeout: int = field(
        default=10800,
        metadata={"help": "Seconds a process waits at a collective (3 h: the main process tokenises the data alone)."},
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
            raise ConfigError(f"--dropout must be a probability in [0, 1) or 'keep', got {self.dropout!r}.")
        return probability

    def min_train_steps_for(self, fresh_head: bool) -> int:
        """``min_train_steps`` as a number of steps for a student with (``fresh_head``) or without a fresh head."""
        value = self.min_train_steps
        if isinstance(value, str) and value.strip().lower() == "auto":
            return FRESH_HEAD_MIN_TRAIN_STEPS if fresh_head else 0
        try:
            steps = int(value)
        except (TypeError, ValueError):
            steps = -1
        if steps < 0 or (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(
                f"--min_train_steps must be a whole number of steps >= 0 or 'auto', got {value!r}. "
                "Fix: pass e.g. --min_train_steps 100, or 0 to train exactly num_train_epochs."
            )
        return steps

    def loss_options(self) -> dict[str, Any]:
        """The options of ``self.loss`` that its function accepts, taken from the fields above and ``loss_kwargs``."""
        candidates = {
            # "auto" is resolved by the trainer (from the training scores / the student type).
            "teacher_temperature": parse_temperature("teacher_temperature", self.teacher_temperature),
            "student_temperature": parse_temperature("student_temperature", self.student_temperature),
            "top_k": self.margin_top_k,
            "num_negatives": self.margin_num_negatives,
        }
        accepted = inspect.signature(get_loss(self.loss)).parameters
        options = {k: v for k, v in candidates.items() if k in accepted}
        if self.loss_kwargs:
            try:
                extra = json.loads(self.loss_kwargs)
            except json.JSONDecodeError as error:
                raise ConfigError(
                    f"--loss_kwargs is not valid JSON ({error}). Fix: pass an object like '{{\"a\": 1}}'."
                ) from None
            if not isinstance(extra, dict):
                raise ConfigError("--loss_kwargs must be a JSON object. Fix: pass an object like '{\"a\": 1}'.")
            options.update(extra)
        return options
