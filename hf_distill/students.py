"""How a student model turns collated inputs into a ``[B, N]`` score matrix.

A *scorer* is a small stateless object that knows how to call a plain Hugging Face model (possibly wrapped by
PEFT, DDP or DeepSpeed) on the micro-batches a collator produced, and how to place the resulting scores back
into the group layout ``[B, N]`` that every loss in :mod:`hf_distill.losses` consumes. The model itself stays
an ordinary ``transformers`` model, so saving, LoRA and sharding work unchanged.

Scorers:

* :class:`CrossEncoderScorer` - sequence-classification logit, ``num_labels=1``
  (bge-reranker-v2-m3, XLM-R, BERT, MiniLM cross-encoders). One forward per unique (query, passage) pair.
* :class:`BiEncoderScorer` - pooled embedding (CLS / mean / last token), optionally L2-normalised, and
  ``scale * sim(q, p)`` with cosine or dot similarity (bge-m3 = CLS + normalised + cosine). One forward per
  unique text.
* :class:`CausalYesNoScorer` - causal-LM yes/no reranker (Qwen3-Reranker): ``logit(yes) - logit(no)`` at the
  prompt's last position, the score the Qwen3-Reranker teacher gives. Prompts come from
  :class:`hf_distill.collators.Qwen3RerankerCollator`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F

from .errors import ConfigError
from .kinds import BI_ENCODER, CAUSAL_LM, CROSS_ENCODER, STUDENT_TYPES, ModelKind, is_causal_lm
from .st_format import POOLING_MODES, Pooling, pool

SIMILARITIES = ("cosine", "dot")


def _scatter_to_groups(flat_scores: torch.Tensor, candidate_index: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Gather flat per-item scores ``[P]`` into the group layout ``[B, N]``; padded slots hold 0."""
    gathered = flat_scores[candidate_index.clamp(min=0)]
    return gathered.masked_fill(~mask, 0.0)


class PairScorer:
    """Base for students that score each (query, passage) pair with one forward (cross-encoders, LLM yes/no)."""

    kind: ClassVar[ModelKind] = CROSS_ENCODER

    def score_pairs(self, model: torch.nn.Module, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Return one float score per row of ``features`` (a padded micro-batch of tokenized pairs)."""
        raise NotImplementedError

    def forward_items(self, model: torch.nn.Module, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """One forward over a micro-batch of items (used for the dummy forwards of sharded training)."""
        return self.score_pairs(model, features)

    def score_groups(
        self, model: torch.nn.Module, micro_batches: list[dict[str, torch.Tensor]], inputs: dict[str, Any]
    ) -> torch.Tensor:
        """Run every micro-batch once and rebuild the ``[B, N]`` student score matrix."""
        return self.combine([self.forward_items(model, features) for features in micro_batches], inputs)

    def combine(self, outputs: list[torch.Tensor], inputs: dict[str, Any]) -> torch.Tensor:
        """The ``[B, N]`` score matrix from the micro-batches' :meth:`forward_items` outputs (pair scores)."""
        flat = torch.cat([scores.float() for scores in outputs])
        return _scatter_to_groups(flat, inputs["pair_index"], inputs["candidate_mask"])


class CrossEncoderScorer(PairScorer):
    """Sequence-classification cross-encoder: the score of a pair is its single raw logit (``num_labels=1``)."""

    def score_pairs(self, model: torch.nn.Module, features: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = model(**features).logits
        if logits.shape[-1] != 1:
            raise ConfigError(
                f"the reranker student must have one output logit (num_labels=1) but has {logits.shape[-1]}. "
                "Fix: load it with AutoModelForSequenceClassification.from_pretrained(..., num_labels=1) "
                "(recipes/reranker.py does this and adds a fresh head when the checkpoint has none)."
            )
        return logits.view(-1)


# Float attributes that modelling code hands to attention kernels as their dropout probability while training
# (Qwen3 / Llama ``attention_dropout``); BERT-style models use the ``p`` of an ``nn.Dropout`` module instead.
_ATTENTION_DROPOUT_ATTRIBUTES = ("attention_dropout",)


def set_dropout(model: torch.nn.Module, probability: float) -> int:
    """Set every dropout probability of ``model`` (``nn.Dropout`` modules and attention-kernel dropout) to
    ``probability``, for training only: the config, and so the saved checkpoint, keep their own values. A PEFT
    model's ``lora_dropout`` modules keep the adapter's configured value.

    Returns how many places were set (0: the model has no dropout).
    """
    if not 0.0 <= probability < 1.0:
        raise ConfigError(f"a dropout probability must be in [0, 1), got {probability}.")
    changed = 0
    lora_dropouts = {
        id(dropout)
        for module in model.modules()
        if isinstance(getattr(module, "lora_dropout", None), torch.nn.ModuleDict)
        for dropout in module.lora_dropout.modules()
    }
    for module in model.modules():
        if id(module) in lora_dropouts:
            continue  # LoRA's own dropout is a setting of the adapter (--lora_dropout), not of the model
        if isinstance(module, torch.nn.Dropout):
            module.p = probability
            changed += 1
        for name in _ATTENTION_DROPOUT_ATTRIBUTES:
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, probability)
                changed += 1
    return changed


# Set by hf_distill.model_loading.load_student on a reranker whose one-logit head it had to initialise: a plain
# instance attribute, never written to the saved config. PEFT and DDP wrappers forward the lookup to the model.
FRESH_HEAD_ATTRIBUTE = "hf_distill_fresh_head"


def mark_fresh_head(model: torch.nn.Module) -> None:
    """Record on ``model`` that its classification head was freshly initialised (read by :func:`has_fresh_head`)."""
    setattr(model, FRESH_HEAD_ATTRIBUTE, True)


def has_fresh_head(model: torch.nn.Module) -> bool:
    """Whether :func:`mark_fresh_head` marked ``model`` (or the model a PEFT / DDP wrapper holds)."""
    while model is not None:
        if getattr(model, FRESH_HEAD_ATTRIBUTE, False) is True:
            return True
        model = getattr(model, "module", None)
    return False


def resolve_student_type(student_type: str, model: torch.nn.Module) -> str:
    """The kind (``cross_encoder`` or ``causal_lm``) of a reranker student; ``auto`` follows the model class."""
    if student_type not in STUDENT_TYPES:
        raise ConfigError(f"student_type must be one of {STUDENT_TYPES}, got {student_type!r}")
    causal = is_causal_lm(model)
    if student_type == "auto":
        return CAUSAL_LM if causal else CROSS_ENCODER
    if student_type == CAUSAL_LM and not causal:
        raise ConfigError(
            f"student_type='causal_lm' needs a *ForCausalLM model, got {type(model).__name__}. Fix: load the student "
            "with AutoModelForCausalLM (recipes/reranker.py does for a causal-LM checkpoint), or use "
            "student_type='cross_encoder'."
        )
    if student_type == CROSS_ENCODER and causal:
        raise ConfigError(
            f"student_type='cross_encoder' needs a sequence-classification model, got {type(model).__name__}. Fix: "
            "load it with AutoModelForSequenceClassification(num_labels=1), or use student_type='causal_lm'."
        )
    return student_type


@dataclass
class CausalYesNoScorer(PairScorer):
    """Causal-LM yes/no reranker (Qwen3-Reranker): ``score = z_yes - z_no`` at the prompt's last position.

    The forward asks the model for the logits of the last position only (``logits_to_keep=1``): the head runs on
    ``[P, H]`` instead of ``[P, L, H]``, so a micro-batch of ``P`` prompts of ``L`` tokens costs ``P x vocab``
    logits, not ``P x L x vocab`` (151,669 columns for Qwen3: 10 GB in fp32 for 64 prompts of 256 tokens). The
    model is called through its own ``forward``, so PEFT, DDP and DeepSpeed wrappers and ZeRO-3's parameter
    gathering of ``lm_head`` work unchanged; slicing two rows out of ``lm_head.weight`` by hand would read an
    empty shard under ZeRO-3. Prompts must be left padded (:class:`~hf_distill.collators.Qwen3RerankerCollator`
    does it), so the last column is every prompt's answer slot. The difference is taken in fp32; under bf16 each
    of the two logits carries bf16 rounding (~0.03 at ``|z| = 8``), far below the teacher-student gaps a loss sees.

    Args:
        yes_token_id / no_token_id: the answer tokens (:func:`hf_distill.prompts.yes_no_token_ids`);
            :meth:`from_tokenizer` finds them.
    """

    yes_token_id: int | None = None
    no_token_id: int | None = None
    kind: ClassVar[ModelKind] = CAUSAL_LM

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> CausalYesNoScorer:
        from .prompts import yes_no_token_ids

        return cls(*yes_no_token_ids(tokenizer))

    def score_pairs(self, model: torch.nn.Module, features: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.yes_token_id is None or self.no_token_id is None:
            raise ConfigError(
                "CausalYesNoScorer has no yes/no token ids. Fix: build it with CausalYesNoScorer.from_tokenizer("
                "tokenizer), or pass processing_class=<the student's tokenizer> to the trainer."
            )
        logits = model(**features, logits_to_keep=1, use_cache=False).logits[:, -1]  # [P, vocab]
        answers = logits[:, [self.yes_token_id, self.no_token_id]].float()
        return answers[:, 0] - answers[:, 1]


@dataclass
class BiEncoderScorer:
    """Bi-encoder student: ``score(q, p) = scale * sim(pool(f(q)), pool(f(p)))``.

    Every unique text of the batch (queries and passages alike) goes through the encoder once; the collator
    gives ``query_index [B]`` and ``passage_index [B, N]`` into that list of texts.

    Args:
        pooling: ``cls``, ``mean`` or ``last``.
        normalize: L2-normalise embeddings (then ``dot`` equals ``cosine``).
        similarity: ``cosine`` or ``dot``.
        scale: multiplies the similarity; losses have their own temperatures, so 1.0 keeps scores on the
            teacher's cosine scale.
    """

    pooling: Pooling = "cls"
    normalize: bool = True
    similarity: Literal["cosine", "dot"] = "cosine"
    scale: float = 1.0
    kind: ClassVar[ModelKind] = BI_ENCODER

    def __post_init__(self) -> None:
        if self.pooling not in POOLING_MODES:
            raise ConfigError(f"pooling must be one of {POOLING_MODES}, got {self.pooling!r}")
        if self.similarity not in SIMILARITIES:
            raise ConfigError(f"similarity must be one of {SIMILARITIES}, got {self.similarity!r}")

    def embed(self, model: torch.nn.Module, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Embed one padded micro-batch of texts into ``[T, H]`` (fp32, normalised if asked)."""
        outputs = model(**features)
        hidden = outputs.last_hidden_state if hasattr(outputs, "last_hidden_state") else outputs[0]
        embeddings = pool(hidden, features["attention_mask"], self.pooling).float()
        if self.normalize or self.similarity == "cosine":
            embeddings = F.normalize(embeddings, p=2, dim=-1)
        return embeddings

    def forward_items(self, model: torch.nn.Module, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.embed(model, features)

    def score_groups(
        self, model: torch.nn.Module, micro_batches: list[dict[str, torch.Tensor]], inputs: dict[str, Any]
    ) -> torch.Tensor:
        return self.combine([self.embed(model, features) for features in micro_batches], inputs)

    def combine(self, outputs: list[torch.Tensor], inputs: dict[str, Any]) -> torch.Tensor:
        """The ``[B, N]`` score matrix from the micro-batches' embeddings: similarity of each query and passage."""
        embeddings = torch.cat(outputs)
        query_embeddings = embeddings[inputs["query_index"]]  # [B, H]
        passage_embeddings = embeddings[inputs["passage_index"].clamp(min=0)]  # [B, N, H]
        scores = torch.einsum("bh,bnh->bn", query_embeddings, passage_embeddings) * self.scale
        return scores.masked_fill(~inputs["candidate_mask"], 0.0)


# What a trainer's ``build_scorer`` returns: a pair scorer (cross-encoder, causal-LM yes/no) or a bi-encoder.
Scorer = PairScorer | BiEncoderScorer
