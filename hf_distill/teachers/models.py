"""Teacher models: each turns a batch of items into raw fp32 values, nothing more.

A teacher works on *items*, the smallest things it runs the model on once:

* pair teachers (:class:`Qwen3RerankerTeacher`, :class:`CrossEncoderTeacher`): an item is a ``(query, passage)``
  pair and its value is the raw score (shape ``[n, 1]``);
* text teachers (:class:`EmbeddingTeacher`): an item is one text (a query with its prompt, or a passage) and
  its value is the L2-normalised embedding (shape ``[n, dim]``); the score of a pair is the cosine
  ``<e(q), e(p)>`` of two normalised embeddings, taken afterwards (:func:`hf_distill.teachers.runner.combine`).

Deduplication, length-sorted batching, sharding and resuming live in :mod:`hf_distill.teachers.runner`; a
teacher only says how long an item is in tokens (:meth:`Teacher.lengths`) and how to score a batch
(:meth:`Teacher.score_batch`). The model is loaded on the first batch, so options can be checked (and a resume
refused) before minutes are spent loading an 8B checkpoint.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from hf_distill.errors import TeacherConfigError
from hf_distill.kinds import BI_ENCODER, CAUSAL_LM, CROSS_ENCODER, ModelKind, item_unit
from hf_distill.prompts import (
    DEFAULT_INSTRUCTION,
    QWEN3_RERANKER_MAX_LENGTH,
    Qwen3RerankerPrompt,
    RerankerBatch,
    qwen3_embedding_query,
    yes_no_token_ids,
)
from hf_distill.st_format import POOLING_MODES, checkpoint_file, pool, read_json, read_sentence_transformers_config

logger = logging.getLogger("hf_distill")

DTYPES = ("auto", "float32", "bfloat16", "float16")


# ---------------------------------------------------------------------------------------------------------
# Small helpers: device, dtype, files of a local or Hub checkpoint
# ---------------------------------------------------------------------------------------------------------


def default_device() -> torch.device:
    """``cuda:LOCAL_RANK`` when a GPU is visible (one GPU per ``accelerate launch`` process), else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    return torch.device("cpu")


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` is bf16 on a GPU that has it (fp16 otherwise) and fp32 on CPU, where half precision is slow."""
    if dtype not in DTYPES:
        raise TeacherConfigError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return getattr(torch, dtype)


def _file_sha256(path: str | None) -> str | None:
    if path is None:
        return None
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _model_kwargs(
    dtype: torch.dtype, attn_implementation: str | None, trust_remote_code: bool, device: torch.device
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": trust_remote_code}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if device.type == "cuda":
        kwargs["device_map"] = str(device)  # load shards straight onto the GPU, not through CPU memory
    return kwargs


# The longest text the embedding teacher reads by default when a decoder checkpoint declares no max_seq_length
# (Qwen3-Embedding's card embeds at 8192).
EMBEDDING_MAX_LENGTH = 8192


def _pinned(features: Any, device: torch.device) -> dict[str, torch.Tensor]:
    """Tokenizer output as a dict of CPU tensors, in pinned memory when they go to a GPU (asynchronous copy)."""
    tensors = dict(features)
    if device.type == "cuda":
        tensors = {key: value.pin_memory() for key, value in tensors.items()}
    return tensors


def _default_max_length(tokenizer: Any, fallback: int = 512) -> int:
    # Tokenizers without a limit report a huge sentinel (int(1e30)); a checkpoint's real limit is far below.
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if limit and limit < 1_000_000 else fallback


# ---------------------------------------------------------------------------------------------------------
# Base class
# ---------------------------------------------------------------------------------------------------------


def _padded_ids(tokenizer: Any, ids: Sequence[Sequence[int]], device: torch.device) -> dict[str, torch.Tensor]:
    """Token ids padded by the tokenizer (its side, its pad token) with their attention mask, as :func:`_pinned`."""
    return _pinned(tokenizer.pad({"input_ids": list(ids)}, return_tensors="pt"), device)


class PendingValues:
    """A batch's values on their way to the host. From a GPU tensor the copy goes to pinned memory with
    ``non_blocking=True`` and a CUDA event marks its end; :meth:`result` waits for that event alone, so the
    accelerator can already run the next batch."""

    def __init__(self, values: torch.Tensor | np.ndarray):
        self._event = None
        if isinstance(values, torch.Tensor) and values.device.type == "cuda":
            host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
            host.copy_(values, non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record()
            self._values: torch.Tensor | np.ndarray = host
        else:
            self._values = values

    def result(self) -> np.ndarray:
        """The values as a float32 numpy array, once they are on the host."""
        if self._event is not None:
            self._event.synchronize()
            self._event = None
        if isinstance(self._values, torch.Tensor):
            self._values = self._values.cpu().numpy()
        return self._values


class Teacher:
    """What every teacher offers to the runner.

    Attributes:
        kind: the model kind (:mod:`hf_distill.kinds`): ``causal_lm``, ``cross_encoder`` or ``bi_encoder``.
        unit: what an item is, from the kind: ``"pair"`` (a ``(query, passage)``) or ``"text"``.
        output_dim: values per item: 1 for pair teachers, the embedding size for text teachers.

    ``model``, when given, is an already loaded model to score with instead of the weights of
    ``model_name_or_path`` (whose tokenizer and settings are still used): e.g. a student in memory, cut to its first
    layers or with a fresh head, scored for a before/after comparison. Cross-encoder and embedding teachers only.
    """

    kind: ClassVar[ModelKind] = CROSS_ENCODER  # a pair teacher unless a subclass says otherwise

    @property
    def unit(self) -> str:
        return item_unit(self.kind)

    def __init__(
        self,
        model_name_or_path: str,
        max_length: int | None = None,
        dtype: str = "auto",
        attn_implementation: str | None = None,
        device: str | torch.device | None = None,
        trust_remote_code: bool = False,
        model: torch.nn.Module | None = None,
    ) -> None:
        self.model_name_or_path = str(model_name_or_path)
        self.device = torch.device(device) if device is not None else default_device()
        self.dtype_name = dtype
        self.torch_dtype = resolve_dtype(dtype, self.device)
        self.attn_implementation = attn_implementation
        self.trust_remote_code = trust_remote_code
        self.max_length = max_length
        self._model: torch.nn.Module | None = None if model is None else model.to(self.device).eval()

    # -- what the runner calls ---------------------------------------------------------------------------
    @property
    def output_dim(self) -> int:
        return 1

    def fingerprint(self) -> dict[str, Any]:
        """Everything that changes the scores; a resumed run must match it exactly.

        Left out on purpose: the batch budget and the attention kernel, which change speed (and at most the
        last bits of a score), so a user may change them to fix an out-of-memory error and still resume.
        """
        return {
            "kind": self.kind,
            "model": self.model_name_or_path,
            "config_sha256": _file_sha256(checkpoint_file(self.model_name_or_path, "config.json")),
            "max_length": self.max_length,
            "dtype": str(self.torch_dtype).replace("torch.", ""),
        }

    def lengths(self, items: Sequence[Any]) -> list[int]:
        """Token count of each item as it will be fed to the model (after prompt and truncation)."""
        raise NotImplementedError

    def score_batch(self, items: Sequence[Any]) -> np.ndarray:
        """Run the model once over ``items``; returns float32 ``[len(items), output_dim]``."""
        return self.run_batch(self.prepare_batch(items))

    # A batch in two halves, so the runner can prepare batch k+1 (tokenize, pad, pin: CPU work) on a thread while
    # batch k runs on the accelerator. A subclass overrides both, or only score_batch (then nothing runs ahead).
    def prepare_batch(self, items: Sequence[Any]) -> Any:
        """The CPU half of :meth:`score_batch`: model inputs for ``items`` (thread-safe, no model call)."""
        return items

    # Token ids computed once: a teacher whose model input is its token ids alone (no token type ids) says so by
    # returning them from encode; the runner then plans from their lengths, keeps them in the work dir, and
    # prepares each batch from them with prepare_encoded instead of tokenizing the texts again.
    def encode(self, items: Sequence[Any]) -> list[list[int]] | None:
        """Token ids of each item exactly as the model reads them, or ``None`` when batches must be prepared from
        the texts (:meth:`prepare_batch`)."""
        return None

    def prepare_encoded(self, ids: Sequence[Sequence[int]], query_ids: Sequence[int] | None = None) -> Any:
        """:meth:`prepare_batch` from :meth:`encode`'s ids; ``query_ids`` numbers each pair's query."""
        raise NotImplementedError(f"{type(self).__name__} does not prepare batches from token ids")

    def start_batch(self, prepared: Any) -> PendingValues:
        """Launch the forward of a prepared batch and the copy of its values to the host, without waiting for
        either: the runner launches batch ``k + 1`` before it waits for batch ``k``'s values
        (:attr:`results_ahead`). Default: :meth:`run_batch`, synchronous."""
        return PendingValues(self.run_batch(prepared))

    @property
    def results_ahead(self) -> bool:
        """Whether the runner should launch the next batch before taking this one's values: on a GPU, where
        :meth:`start_batch` returns before the forward ends."""
        return self.device.type == "cuda"

    def run_batch(self, prepared: Any) -> np.ndarray:
        """The model half of :meth:`score_batch`: float32 ``[n, output_dim]`` from :meth:`prepare_batch`'s output."""
        if type(self).start_batch is not Teacher.start_batch:
            return self.start_batch(prepared).result()
        if type(self).score_batch is Teacher.score_batch and "score_batch" not in vars(self):
            raise NotImplementedError(f"{type(self).__name__} implements neither score_batch nor run_batch")
        return self.score_batch(prepared)

    # -- helpers for subclasses ----------------------------------------------------------------------------
    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            logger.info("loading teacher %s (%s) on %s", self.model_name_or_path, self.torch_dtype, self.device)
            self._model = self._load_model().to(self.device).eval()
        return self._model

    def _load_model(self) -> torch.nn.Module:
        raise NotImplementedError

    def _load_tokenizer(self, **kwargs: Any) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(
            self.model_name_or_path, trust_remote_code=self.trust_remote_code, **kwargs
        )


# ---------------------------------------------------------------------------------------------------------
# Qwen3-Reranker: causal LM, yes/no
# ---------------------------------------------------------------------------------------------------------


class Qwen3RerankerTeacher(Teacher):
    """Qwen3-Reranker (0.6B/4B/8B) and other yes/no causal-LM rerankers.

    .. math:: s(q, d) = h_{-1} \\cdot (w_{\\text{yes}} - w_{\\text{no}}) = z_{\\text{yes}} - z_{\\text{no}}

    with :math:`h_{-1}` the final hidden state at the prompt's last token (left padding puts it in the last
    column) and :math:`w` the two ``lm_head`` rows. Only those two logits are computed, in fp32: the full
    ``[B, vocab]`` head (151k columns for Qwen3) is never run, and its weight is dropped after loading when it
    is not tied to the input embeddings. Prompts come from :class:`hf_distill.prompts.Qwen3RerankerPrompt`.

    Shared prefixes (``prefix_cache``, on by default): the prompts of one query's candidates share the frame, the
    instruction and the query (most of the prompt when documents are short, as on StackOverflow). Since
    :math:`h_{-1}(x)` depends on a prefix :math:`x_{:P}` only through its keys and values, each query's prefix runs
    once per batch and its keys/values serve all its candidates, which then run only their remainders :math:`x_{P:}`
    (:class:`hf_distill.prompts.RerankerBatch`): the same scores (up to float rounding) from
    :math:`\\sum_g P_g + \\sum_i (L_i - P_{g(i)})` forwarded tokens instead of :math:`\\sum_i L_i`. The runner then
    batches a query's candidates together (``batches_by_query``).

    Args:
        instruction: the task; the model card's default when ``None``.
        max_length: longest prompt in tokens (default 8192, the card's); only the query+document part is cut.
        prefix_cache: run each query's shared prompt prefix once per batch (default); ``False`` runs every prompt
            whole. Not in :meth:`fingerprint`: the scores are the same either way, so a run may resume with the
            other setting.
    """

    kind = CAUSAL_LM
    # Read by the runner: batches in which a query's candidates are contiguous (longest first), so that most of a
    # batch runs on shared prefixes. Set per instance from prefix_cache.
    batches_by_query: bool = True
    _shared_prefix_layer_class: ClassVar[type | None] = None

    def __init__(
        self,
        model_name_or_path: str,
        instruction: str | None = None,
        max_length: int | None = None,
        prefix_cache: bool = True,
        **kwargs: Any,
    ):
        super().__init__(model_name_or_path, max_length=max_length, **kwargs)
        self.prefix_cache = bool(prefix_cache) and self._full_attention_only()
        self.batches_by_query = self.prefix_cache
        self.instruction = DEFAULT_INSTRUCTION if instruction is None else instruction
        self.tokenizer = self._load_tokenizer()
        if self.max_length is None:
            # The model card's 8192, or less when the checkpoint says so: a distilled student is saved with the
            # length it was trained at, and is served at it.
            self.max_length = min(
                QWEN3_RERANKER_MAX_LENGTH, _default_max_length(self.tokenizer, QWEN3_RERANKER_MAX_LENGTH)
            )
        try:
            self.prompt = Qwen3RerankerPrompt(self.tokenizer, self.instruction, self.max_length)
            self.yes_id, self.no_id = yes_no_token_ids(self.tokenizer)
        except ValueError as error:  # a max_length below the prompt frame, a tokenizer without yes/no tokens
            raise TeacherConfigError(f"{model_name_or_path}: {error}") from None
        self._answer_rows: torch.Tensor | None = None
        self._answer_bias: torch.Tensor | None = None

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "instruction": self.instruction, "backend": "hf"}

    def _full_attention_only(self) -> bool:
        """Whether every layer of the checkpoint attends to the whole past (Qwen3-Reranker: yes).

        A sliding window counts key positions in the cache, where a left-padded prefix puts its pads between the
        prefix and the remainder: shared prefixes would change such a model's scores, so it runs prompts whole.
        """
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(self.model_name_or_path, trust_remote_code=self.trust_remote_code)
        except (OSError, ValueError):  # no readable config here: loading the model will say what is wrong
            return True
        text = config.get_text_config(decoder=True)
        layer_types = getattr(text, "layer_types", None)
        if layer_types is not None:
            full = all(kind == "full_attention" for kind in layer_types)
        else:
            full = not getattr(text, "use_sliding_window", getattr(text, "sliding_window", None))
        if not full:
            logger.info("%s has sliding-window layers: prompts run whole (no shared prefixes)", self.model_name_or_path)
        return full

    def lengths(self, items: Sequence[tuple[str, str]]) -> list[int]:
        return self.prompt.lengths(items)

    def _load_model(self) -> torch.nn.Module:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(
            self.model_name_or_path,
            **_model_kwargs(self.torch_dtype, self.attn_implementation, self.trust_remote_code, self.device),
        )
        head = model.get_output_embeddings()
        rows = head.weight[[self.yes_id, self.no_id]].detach().float().clone()
        bias = getattr(head, "bias", None)
        self._answer_rows = rows.to(self.device)
        self._answer_bias = (
            bias[[self.yes_id, self.no_id]].detach().float().to(self.device) if bias is not None else None
        )
        if head.weight is not model.get_input_embeddings().weight:
            # Untied head (Qwen3-Reranker-4B/8B): its vocab x hidden weight is never used again; free it.
            model.set_output_embeddings(torch.nn.Identity())
        return model

    def prepare_batch(self, items: Sequence[tuple[str, str]]) -> RerankerBatch:
        """Prompt ids of ``items`` as padded CPU tensors, split by shared prefix with one group per query when
        ``prefix_cache`` is on (:meth:`hf_distill.prompts.Qwen3RerankerPrompt.batch`); pinned when they go to a
        GPU. Thread-safe, no model call."""
        return self.prepare_encoded(self.prompt.encode(items), [query for query, _ in items])

    def encode(self, items: Sequence[tuple[str, str]]) -> list[list[int]]:
        return self.prompt.encode(items)

    def prepare_encoded(self, ids: Sequence[Sequence[int]], query_ids: Sequence[Any] | None = None) -> RerankerBatch:
        groups = list(query_ids) if self.prefix_cache and query_ids is not None else None
        batch = self.prompt.batch(ids, groups)
        return batch.apply(torch.Tensor.pin_memory) if self.device.type == "cuda" else batch

    @torch.inference_mode()
    def start_batch(self, prepared: RerankerBatch) -> PendingValues:
        """Scores ``z_yes - z_no`` (float32 ``[n, 1]``, in the order of the items) of a :meth:`prepare_batch`
        output: one forward for the prompts run whole, two (prefixes, then remainders) for the shared ones."""
        decoder = self.model.get_decoder()
        batch = prepared.apply(lambda tensor: tensor.to(self.device, non_blocking=True))
        scores = torch.empty(batch.size, dtype=torch.float32, device=self.device)
        if batch.plain is not None:
            hidden = decoder(**batch.plain, use_cache=False).last_hidden_state[:, -1]  # [B, H], last real token
            scores[batch.plain_rows] = self._answer_scores(hidden)
        if batch.prefix is not None:
            scores[batch.shared_rows] = self._answer_scores(self._shared_prefix_states(decoder, batch))
        return PendingValues(scores.unsqueeze(1))

    def _answer_scores(self, hidden: torch.Tensor) -> torch.Tensor:
        """``z_yes - z_no`` from final hidden states ``[B, H]``, with the two ``lm_head`` rows in fp32."""
        logits = hidden.float() @ self._answer_rows.T  # [B, 2]: yes, no
        if self._answer_bias is not None:
            logits = logits + self._answer_bias
        return logits[:, 0] - logits[:, 1]

    def _shared_prefix_states(self, decoder: torch.nn.Module, batch: RerankerBatch) -> torch.Tensor:
        """Last hidden states ``[m, H]`` of the shared-prefix prompts: the ``G`` prefixes in one forward that keeps
        their keys and values, then the ``m`` remainders in one forward on them (each on its query's prefix)."""
        import inspect

        # transformers >= 5.24 calls the cache argument (and output) `cache`; older and remote code `past_key_values`.
        name = "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"
        cache = getattr(decoder(**batch.prefix, use_cache=True), name)
        layers = self._broadcast_prefixes(cache, batch.prefix_index)
        hidden = decoder(**batch.remainder, **{name: cache}, use_cache=True).last_hidden_state[:, -1]
        if any(layer.updates == 0 for layer in layers):
            raise RuntimeError(
                f"{self.model_name_or_path}: the decoder did not read the prefix keys/values passed as {name!r}, so "
                "shared-prefix scores would be wrong. Fix: score with prefix_cache=False."
            )
        return hidden

    @staticmethod
    def _broadcast_prefixes(cache: Any, index: torch.Tensor) -> list[Any]:
        """Make each cache layer serve row ``i`` of the next forward the keys/values of prefix ``index[i]``.

        Each ``DynamicLayer`` is swapped for a layer that expands on use, :math:`K = [K_{\\text{prefix}}[\\text{index}]
        \\,|\\, K_{\\text{new}}]` (``index_select`` on the batch dim), and stores nothing: only one layer's
        ``m x (P + R)`` keys/values exist at a time, as in the plain forward without a cache (expanding every
        layer's keys/values up front would hold the whole batch's cache, all layers at once). Returns the layers.
        """
        from transformers.cache_utils import DynamicLayer

        if Qwen3RerankerTeacher._shared_prefix_layer_class is None:

            class SharedPrefixLayer(DynamicLayer):
                def __init__(self, keys: torch.Tensor, values: torch.Tensor, index: torch.Tensor):
                    super().__init__()
                    self.keys, self.values, self.index = keys, values, index
                    self.device, self.is_initialized, self.updates = keys.device, True, 0

                def update(
                    self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
                ) -> tuple[torch.Tensor, torch.Tensor]:
                    self.updates += 1
                    keys = torch.cat([self.keys.index_select(0, self.index), key_states], dim=-2)
                    values = torch.cat([self.values.index_select(0, self.index), value_states], dim=-2)
                    return keys, values

            Qwen3RerankerTeacher._shared_prefix_layer_class = SharedPrefixLayer
        layers = getattr(cache, "layers", None)
        if not layers or any(type(layer) is not DynamicLayer or layer.keys is None for layer in layers):
            raise RuntimeError(
                f"shared prefixes need a transformers DynamicCache of full-attention layers, got {cache!r}. Fix: "
                "score with prefix_cache=False."
            )
        for i, layer in enumerate(layers):
            layers[i] = Qwen3RerankerTeacher._shared_prefix_layer_class(layer.keys, layer.values, index)
        return layers


# ---------------------------------------------------------------------------------------------------------
# Sequence-classification cross-encoder
# ---------------------------------------------------------------------------------------------------------


def _refuse_decoder(config: Any, model_name_or_path: str) -> None:
    """A decoder (causal-LM family) checkpoint cannot be a cross-encoder teacher: see :class:`CrossEncoderTeacher`."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    model_type = getattr(config, "model_type", None)
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES or model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return  # an encoder (BERT, XLM-RoBERTa, ModernBERT, ...): what cross_encoder is for
    architectures = ", ".join(getattr(config, "architectures", None) or [model_type])
    raise TeacherConfigError(
        f"{model_name_or_path} is a decoder ({architectures}), not an encoder cross-encoder: fed "
        "tokenizer(query, passage) without the prompt it was trained with, it gives meaningless scores. Fix: for "
        "Qwen3-Reranker use the original checkpoint (e.g. Qwen/Qwen3-Reranker-8B) with --teacher_type qwen3_reranker "
        "(its yes/no prompt; a *-seq-cls conversion is for vLLM serving); other causal-LM rerankers (e.g. "
        "bge-reranker-v2-gemma, which scores a 'Yes' token after its own prompt) are not supported as teachers."
    )


CROSS_ENCODER_TRUNCATIONS = ("longest_first", "flagembedding")
CROSS_ENCODER_MAX_LENGTH = 1024  # what BAAI fine-tuned bge-reranker-v2-m3 at (its tokenizer allows 8192)


class CrossEncoderTeacher(Teacher):
    """A ``AutoModelForSequenceClassification`` cross-encoder with one output: score = its raw logit.

    Truncation, ``truncation=``:

    * ``"longest_first"`` (default): ``tokenizer(query, passage, truncation="longest_first")``, as
      ``sentence_transformers.CrossEncoder`` does, so scores equal ``CrossEncoder.predict(...,
      activation_fn=Identity())``;
    * ``"flagembedding"``: as ``FlagEmbedding.FlagReranker.compute_score(normalize=False)``: the query is cut to
      ``3/4 * max_length`` tokens first, then only the passage is cut to fit.

    ``max_length`` defaults to ``min(model_max_length, 1024)``: bge-reranker-v2-m3's tokenizer says 8192, but
    the model was fine-tuned at 1024 (BAAI's advice) and attention costs grow with the square of the length.

    Decoder checkpoints are refused: a ``Qwen3ForSequenceClassification`` conversion of Qwen3-Reranker needs its
    chat prompt, which ``tokenizer(query, passage)`` does not give (scores would be meaningless), and causal-LM
    rerankers such as bge-reranker-v2-gemma score a token after a prompt of their own. ``allow_decoder=True``
    scores one anyway: for a student trained here with a one-logit head on a decoder, which learnt from exactly
    ``tokenizer(query, passage)``.
    """

    kind = CROSS_ENCODER

    def __init__(
        self,
        model_name_or_path: str,
        max_length: int | None = None,
        truncation: str = "longest_first",
        allow_decoder: bool = False,
        **kwargs: Any,
    ):
        super().__init__(model_name_or_path, max_length=max_length, **kwargs)
        if truncation not in CROSS_ENCODER_TRUNCATIONS:
            raise TeacherConfigError(
                f"truncation must be one of {', '.join(CROSS_ENCODER_TRUNCATIONS)}, got {truncation!r}."
            )
        self.truncation = truncation
        self.tokenizer = self._load_tokenizer()
        if max_length is None:
            self.max_length = min(_default_max_length(self.tokenizer), CROSS_ENCODER_MAX_LENGTH)
            if _default_max_length(self.tokenizer) > self.max_length:
                logger.info(
                    "cross-encoder %s: max_length %d (its tokenizer allows %d; pass --max_length to change it)",
                    self.model_name_or_path,
                    self.max_length,
                    _default_max_length(self.tokenizer),
                )
        from transformers import AutoConfig

        # AutoConfig, not the raw json: transformers leaves the default num_labels=2 out of config.json.
        config = (
            self._model.config
            if self._model is not None
            else AutoConfig.from_pretrained(self.model_name_or_path, trust_remote_code=self.trust_remote_code)
        )
        if not allow_decoder:
            _refuse_decoder(config, self.model_name_or_path)
        num_labels = config.num_labels
        if num_labels != 1:
            raise TeacherConfigError(
                f"{self.model_name_or_path} has {num_labels} output labels but a cross-encoder teacher needs one "
                "raw logit (num_labels=1). Fix: use a reranker checkpoint with a single output, or convert the "
                "two-class head into one logit (logit_relevant - logit_irrelevant) and save that."
            )

    def fingerprint(self) -> dict[str, Any]:
        extra = {"truncation": self.truncation} if self.truncation != "longest_first" else {}
        return {**super().fingerprint(), **extra}  # unchanged for the default: earlier work dirs still resume

    def _tokenize(self, items: Sequence[tuple[str, str]], **kwargs: Any) -> Any:
        queries = [q for q, _ in items]
        passages = [p for _, p in items]
        if self.truncation == "flagembedding":
            queries = self._cut_queries(queries)
            return self.tokenizer(queries, passages, truncation="only_second", max_length=self.max_length, **kwargs)
        return self.tokenizer(queries, passages, truncation="longest_first", max_length=self.max_length, **kwargs)

    def _cut_queries(self, queries: list[str]) -> list[str]:
        """Each query cut after its first ``3/4 * max_length`` tokens (FlagEmbedding's ``query_max_length``)."""
        limit = self.max_length * 3 // 4
        encoded = self.tokenizer(queries, add_special_tokens=False, return_offsets_mapping=True)
        cut = []
        for query, ids, offsets in zip(queries, encoded["input_ids"], encoded["offset_mapping"]):
            cut.append(query if len(ids) <= limit else query[: offsets[limit - 1][1]])
        return cut

    def lengths(self, items: Sequence[tuple[str, str]]) -> list[int]:
        return [len(ids) for ids in self._tokenize(items)["input_ids"]]

    def _load_model(self) -> torch.nn.Module:
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification.from_pretrained(
            self.model_name_or_path,
            **_model_kwargs(self.torch_dtype, self.attn_implementation, self.trust_remote_code, self.device),
        )

    def prepare_batch(self, items: Sequence[tuple[str, str]]) -> Any:
        return _pinned(self._tokenize(items, padding=True, return_tensors="pt"), self.device)

    def encode(self, items: Sequence[tuple[str, str]]) -> list[list[int]] | None:
        if "token_type_ids" in self.tokenizer.model_input_names:
            return None  # BERT-style pairs need their segment ids too: prepared from the texts
        return self._tokenize(items)["input_ids"]

    def prepare_encoded(self, ids: Sequence[Sequence[int]], query_ids: Sequence[int] | None = None) -> Any:
        return _padded_ids(self.tokenizer, ids, self.device)

    @torch.inference_mode()
    def start_batch(self, prepared: Any) -> PendingValues:
        features = {key: value.to(self.device, non_blocking=True) for key, value in prepared.items()}
        logits = self.model(**features).logits
        return PendingValues(logits.float().view(-1, 1))


# ---------------------------------------------------------------------------------------------------------
# Embedding teacher
# ---------------------------------------------------------------------------------------------------------


class EmbeddingTeacher(Teacher):
    """A bi-encoder teacher: score = cosine of normalised pooled embeddings, ``<e(q), e(p)>``.

    For a sentence-transformers checkpoint, pooling, normalisation, ``max_seq_length`` and the query/document
    prompts come from its own files (:func:`read_sentence_transformers_config`); explicit arguments override
    them. Qwen3-Embedding: last-token pooling, queries ``"Instruct: {task}\\nQuery:{query}"``
    (:func:`hf_distill.prompts.qwen3_embedding_query`), documents as they are.

    Args:
        pooling: ``cls``, ``mean`` or ``last``; required for a plain transformers checkpoint.
        instruction: when given, queries are prefixed Qwen3-Embedding style with it (overrides the checkpoint's
            ``query`` prompt).

    Embeddings are always L2-normalised (a cosine does not depend on it; a ``Normalize`` module in the checkpoint
    is read but changes nothing), and the teacher's values are those normalised embeddings.
    """

    kind = BI_ENCODER

    def __init__(
        self,
        model_name_or_path: str,
        pooling: str | None = None,
        instruction: str | None = None,
        max_length: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(model_name_or_path, max_length=max_length, **kwargs)
        st = read_sentence_transformers_config(self.model_name_or_path)
        if pooling is None and (st is None or st["pooling"] is None):
            raise TeacherConfigError(
                f"{self.model_name_or_path} declares no readable sentence-transformers pooling (no modules.json, or "
                "no readable 1_Pooling/config.json), so its pooling is unknown. Fix: pass --pooling cls (BERT/XLM-R/bge), mean (MiniLM/E5) or last "
                "(Qwen3-Embedding)."
            )
        self.pooling = pooling or st["pooling"]
        if self.pooling not in POOLING_MODES:
            raise TeacherConfigError(f"pooling must be one of {POOLING_MODES}, got {self.pooling!r}")
        self.tokenizer = self._load_tokenizer()
        self.max_length = max_length or (st and st["max_seq_length"]) or _default_max_length(self.tokenizer)
        if max_length is None and self.pooling == "last" and self.max_length > EMBEDDING_MAX_LENGTH:
            # A plain copy of a decoder embedder (no sentence_bert_config.json) reports its context (32k-131k for
            # Qwen): the card embeds at 8192, and longer only costs memory.
            logger.info("%s: max length %d capped at %d (pass --max_length to change it)", self.model_name_or_path,
                        self.max_length, EMBEDDING_MAX_LENGTH)  # fmt: skip
            self.max_length = EMBEDDING_MAX_LENGTH
        prompts = (st or {}).get("prompts", {})
        self.instruction = instruction
        self.query_prefix = (
            qwen3_embedding_query("", instruction) if instruction is not None else prompts.get("query", "")
        )
        self.passage_prefix = prompts.get("document", prompts.get("passage", ""))
        self.lowercase = bool(st and st["do_lower_case"])
        if st is not None and not st.get("include_prompt", True) and (self.query_prefix or self.passage_prefix):
            raise TeacherConfigError(
                f"{self.model_name_or_path} pools without its prompt tokens (include_prompt=false), which this teacher "
                "does not reproduce. Fix: score it with sentence-transformers."
            )
        self._output_dim: int | None = None

    def fingerprint(self) -> dict[str, Any]:
        return {
            **super().fingerprint(),
            "pooling": self.pooling,
            "query_prefix": self.query_prefix,
            "passage_prefix": self.passage_prefix,
            "lowercase": self.lowercase,
        }

    def query_text(self, query: str) -> str:
        return self.query_prefix + query

    def passage_text(self, passage: str) -> str:
        return self.passage_prefix + passage

    @property
    def output_dim(self) -> int:
        if self._output_dim is None:
            config = read_json(checkpoint_file(self.model_name_or_path, "config.json")) or {}
            self._output_dim = int(config.get("hidden_size") or self.model.config.hidden_size)
        return self._output_dim

    def _tokenize(self, texts: Sequence[str], **kwargs: Any) -> Any:
        texts = [t.lower() for t in texts] if self.lowercase else list(texts)
        return self.tokenizer(texts, truncation="longest_first", max_length=self.max_length, **kwargs)

    def lengths(self, items: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self._tokenize(items)["input_ids"]]

    def _load_model(self) -> torch.nn.Module:
        from transformers import AutoModel

        return AutoModel.from_pretrained(
            self.model_name_or_path,
            **_model_kwargs(self.torch_dtype, self.attn_implementation, self.trust_remote_code, self.device),
        )

    def prepare_batch(self, items: Sequence[str]) -> Any:
        return _pinned(self._tokenize(items, padding=True, return_tensors="pt"), self.device)

    def encode(self, items: Sequence[str]) -> list[list[int]]:
        return self._tokenize(items)["input_ids"]

    def prepare_encoded(self, ids: Sequence[Sequence[int]], query_ids: Sequence[int] | None = None) -> Any:
        return _padded_ids(self.tokenizer, ids, self.device)

    @torch.inference_mode()
    def start_batch(self, prepared: Any) -> PendingValues:
        features = {key: value.to(self.device, non_blocking=True) for key, value in prepared.items()}
        outputs = self.model(**features)
        hidden = outputs.last_hidden_state if hasattr(outputs, "last_hidden_state") else outputs[0]
        # cls / last select one row per text: pool first, then widen ([T, H], not the whole [T, L, H] state, in fp32).
        if self.pooling == "mean":
            embeddings = pool(hidden.float(), features["attention_mask"], self.pooling)
        else:
            embeddings = pool(hidden, features["attention_mask"], self.pooling).float()
        return PendingValues(F.normalize(embeddings, p=2, dim=-1))
