"""vLLM backend for the Qwen3-Reranker teacher: same prompt token ids, same score, higher throughput.

Each prompt is built by :class:`hf_distill.prompts.Qwen3RerankerPrompt` (the HF backend's builder) and given to
vLLM as token ids (``TokensPrompt``), so both backends see identical inputs. The score is the HF backend's
:math:`z_{yes} - z_{no}`, read from one of two vLLM paths, chosen by what the installed vLLM offers (not by its
version number; ``runner`` in the engine arguments forces one):

**Pooling runner** (the default where vLLM has it: ``LLM(runner="pooling")``, vLLM 0.10.1 and later, and a
``PoolingParams`` that can switch the classifier's activation off: ``use_activation`` from 0.11.1, ``activation``
in 0.10.x). The checkpoint is loaded as a sequence classifier with the overrides of vLLM's own example for the
original Qwen3-Reranker (``examples/pooling/score/qwen3_reranker_offline.py``)::

    hf_overrides={"architectures": ["Qwen3ForSequenceClassification"],
                  "classifier_from_token": ["no", "yes"], "is_original_qwen3_reranker": True}

vLLM turns the two lm_head rows into one score row ``w[tokens[1]] - w[tokens[0]] = w_yes - w_no`` in fp32
(``vllm/model_executor/models/adapters.py``, ``load_weights_using_from_2_way_softmax``: ``false_id =
tokens[0]``, ``true_id = tokens[1]``; so the order ``["no", "yes"]`` matters), applies it to the last token's final
hidden state (LAST pooling) in an fp32 head (``ModelConfig.head_dtype``), and :meth:`LLM.classify` with the
activation off returns that raw logit, :math:`h \\cdot (w_{yes} - w_{no}) = z_{yes} - z_{no}`; with it on it would be
the sigmoid, i.e. the card's ``softmax([no, yes])[yes]``. No full-vocabulary head, log-softmax or top-k runs.

**Generate runner** (the fallback: an older vLLM, or ``runner="generate"``). vLLM generates one token restricted to
``{yes, no}`` and returns its log-probabilities; both come from one softmax, so

.. math:: \\log p(\\text{yes}) - \\log p(\\text{no}) = z_{\\text{yes}} - z_{\\text{no}}

(the log-normaliser cancels). Where vLLM has ``logprobs_mode`` (0.10.2 and later), the engine is started with
``"processed_logprobs"``: the log-probabilities are then taken after the ``{yes, no}`` restriction (and before any
temperature: decoding is greedy), so both answers are always returned and their difference is exact. Older vLLM
returns the raw distribution's top 20 plus the sampled token; the sampled one is whichever of yes/no is more
likely, so at least one is there, and when the other is not in the top 20 (the model is very sure) the smallest
returned log-probability bounds it and is used. How often that happened is logged.

**Length.** vLLM refuses a prompt longer than ``max_model_len``, and on the generate runner one of exactly
``max_model_len`` tokens too, as there is no room left for the output token (``vllm/v1/engine/input_processor.py``,
``_validate_prompt_len``); the pooling runner accepts it. An over-long prompt is cut to exactly ``max_length``
tokens, so the engine gets ``max_model_len = max_length`` (pooling) or ``max_length + 1`` (generate).

**One GPU per process.** Under a launcher (``WORLD_SIZE > 1``), process ``LOCAL_RANK = k`` restricts
``CUDA_VISIBLE_DEVICES`` to its own entries of the list it was given (entry ``k`` for an engine on one GPU; ``n``
entries from ``k*n`` for tensor x pipeline parallel size ``n``), or to those GPU indices when none was given, before anything
touches CUDA: vLLM always runs on the first visible GPUs, and SLURM and other launchers give every task the whole
list. A ``LOCAL_RANK`` beyond the list is refused (:func:`local_visible_devices`).

vLLM needs a GPU and is not a dependency of hf_distill: ``pip install vllm``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hf_distill.errors import ConfigError, MissingDependencyError, TeacherConfigError
from hf_distill.kinds import CAUSAL_LM
from hf_distill.prompts import DEFAULT_INSTRUCTION, QWEN3_RERANKER_MAX_LENGTH, Qwen3RerankerPrompt, yes_no_token_ids
from hf_distill.teachers.models import Teacher

logger = logging.getLogger("hf_distill")

VLLM_MAX_LOGPROBS = 20  # vLLM's default cap on returned logprobs per position

# vLLM's overrides for the original (causal-LM) Qwen3-Reranker on the pooling runner. The order of
# classifier_from_token matters: vLLM's score row is w[tokens[1]] - w[tokens[0]].
QWEN3_RERANKER_HF_OVERRIDES: dict[str, Any] = {
    "architectures": ["Qwen3ForSequenceClassification"],
    "classifier_from_token": ["no", "yes"],
    "is_original_qwen3_reranker": True,
}

RUNNERS = ("auto", "pooling", "generate")
ENGINE_ARGS_FLAG = "--vllm_engine_args"
# Engine arguments this backend sets itself, with the hf_distill option that controls each where there is one.
RESERVED_ENGINE_ARGS: dict[str, str | None] = {
    "model": "--teacher_model_name_or_path",
    "tokenizer": "--teacher_model_name_or_path",
    "dtype": "--dtype",
    "max_model_len": "--max_length",
    "trust_remote_code": "--trust_remote_code",
    "hf_overrides": None,
    "task": None,
    "convert": None,
    "logprobs_mode": None,
}


class VLLMNotInstalledError(MissingDependencyError):
    """``--backend vllm`` was asked for but vllm cannot be imported."""


def require_vllm() -> Any:
    """Import vllm, or fail with what to do."""
    try:
        import vllm
    except ImportError as error:
        raise VLLMNotInstalledError(
            "--backend vllm needs the vllm package, which is not installed "
            f"({error}). Fix: `pip install vllm` on a machine with a CUDA GPU, or use --backend hf."
        ) from error
    return vllm


def parse_engine_args(value: str | Mapping[str, Any] | None, flag: str = ENGINE_ARGS_FLAG) -> dict[str, Any]:
    """The extra ``vllm.LLM`` keyword arguments of ``--vllm_engine_args``: a JSON object (or an already parsed one).

    ``runner`` (``auto``, ``pooling`` or ``generate``) picks this backend's vLLM path; any other key goes to
    ``LLM(...)`` as it is, and wins over this backend's defaults (``enable_prefix_caching``,
    ``gpu_memory_utilization``, ``tensor_parallel_size``). Keys the backend derives from its own options
    (``dtype``, ``max_model_len``, ...) are refused with the option to use instead.

    Raises:
        ConfigError: the text is not JSON, not a JSON object, sets a reserved key, or names an unknown runner.
    """
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise ConfigError(
                f"{flag} is not valid JSON ({error}). Fix: pass one JSON object, e.g. "
                f'{flag} \'{{"max_num_batched_tokens": 65536, "enforce_eager": true}}\'.'
            ) from None
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{flag} must be a JSON object of vllm.LLM keyword arguments, got {type(value).__name__} {value!r}. "
            f"Fix: pass e.g. {flag} '{{\"max_num_seqs\": 512}}'."
        )
    args = dict(value)
    for key, option in RESERVED_ENGINE_ARGS.items():
        if key in args:
            instead = f"; set it with {option}" if option else ""
            raise ConfigError(f"{flag} sets {key!r}, which the vLLM teacher derives itself{instead}. Fix: drop it.")
    if args.get("runner", "auto") not in RUNNERS:
        raise ConfigError(f"{flag}: runner must be one of {RUNNERS}, got {args['runner']!r}.")
    return args


def local_visible_devices(environ: Mapping[str, str], gpus_per_engine: int = 1) -> str | None:
    """The ``CUDA_VISIBLE_DEVICES`` this process's engine must see under a launcher, or ``None`` to keep it.

    With ``WORLD_SIZE > 1``, process ``LOCAL_RANK = k`` takes entries ``k*n .. k*n + n - 1`` (``n`` =
    ``gpus_per_engine``, tensor x pipeline parallel size) of the list it was given, or those GPU indices when the
    variable is unset. A list of exactly ``n`` entries is this process's own (``srun --gpus-per-task``): kept.

    Raises:
        TeacherConfigError: the list has fewer entries than this process needs.
    """
    if int(environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    local_rank = int(environ.get("LOCAL_RANK", "0"))
    start, stop = local_rank * gpus_per_engine, (local_rank + 1) * gpus_per_engine
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return ",".join(str(index) for index in range(start, stop))
    devices = [device.strip() for device in visible.split(",") if device.strip()]
    if len(devices) == gpus_per_engine:
        return None  # the launcher already gave this process its own GPUs (srun --gpus-per-task): keep them
    if stop > len(devices):
        raise TeacherConfigError(
            f"LOCAL_RANK={local_rank} with {gpus_per_engine} GPU(s) per vLLM engine needs entries {start}..{stop - 1} "
            f"of CUDA_VISIBLE_DEVICES={visible!r}, which lists {len(devices)} GPU(s): each process of the launch runs its "
            f"own vLLM engine on its own GPUs. Fix: start at most {len(devices) // gpus_per_engine} processes per "
            "node (accelerate launch --num_processes), or make CUDA_VISIBLE_DEVICES list every GPU of the node."
        )
    return ",".join(devices[start:stop])


def engine_arg_names(vllm: Any) -> set[str]:
    """The fields of ``vllm.EngineArgs`` (what ``LLM(**kwargs)`` accepts besides its own arguments)."""
    engine_args = getattr(vllm, "EngineArgs", None)
    if engine_args is None or not dataclasses.is_dataclass(engine_args):
        return set()
    return {field.name for field in dataclasses.fields(engine_args)}


def raw_logit_pooling_params(vllm: Any) -> dict[str, bool] | None:
    """``PoolingParams`` keywords that turn the classifier's activation off in this vLLM, or ``None`` when it has no
    pooling path for the reranker (no ``runner`` engine argument, no ``LLM.classify``, or no such keyword)."""
    pooling_params = getattr(vllm, "PoolingParams", None)
    if "runner" not in engine_arg_names(vllm) or pooling_params is None:
        return None
    if not callable(getattr(getattr(vllm, "LLM", None), "classify", None)):
        return None
    for name in ("use_activation", "activation"):  # 0.11.1 and later; 0.10.x
        try:
            pooling_params(**{name: False})
        except TypeError:  # msgspec.Struct: unexpected keyword argument
            continue
        return {name: False}
    return None


def vllm_prompts(prompt: Qwen3RerankerPrompt, pairs: Sequence[tuple[str, str]]) -> list[dict[str, list[int]]]:
    """The vLLM inputs (``TokensPrompt`` dicts) for ``pairs``: exactly the HF backend's token ids, unpadded."""
    return [{"prompt_token_ids": ids} for ids in prompt.encode(pairs)]


def scores_from_outputs(outputs: Sequence[Any], yes_id: int, no_id: int) -> tuple[np.ndarray, int]:
    """``logprob(yes) - logprob(no)`` from vLLM ``RequestOutput`` objects; also returns how many were bounded."""
    scores = np.empty((len(outputs), 1), dtype=np.float32)
    bounded = 0
    for row, output in enumerate(outputs):
        logprobs = output.outputs[0].logprobs[0]  # {token_id: Logprob} at the one generated position
        floor = min(entry.logprob for entry in logprobs.values())
        values = []
        for token_id in (yes_id, no_id):
            entry = logprobs.get(token_id)
            if entry is None:
                bounded += 1
            values.append(floor if entry is None else entry.logprob)
        scores[row, 0] = values[0] - values[1]
    return scores, bounded


def scores_from_classify(outputs: Sequence[Any]) -> np.ndarray:
    """The raw logits of vLLM ``ClassificationRequestOutput`` objects (one label each) as float32 ``[n, 1]``."""
    scores = np.empty((len(outputs), 1), dtype=np.float32)
    for row, output in enumerate(outputs):
        probs = output.outputs.probs
        if len(probs) != 1:
            raise RuntimeError(
                f"vLLM's converted Qwen3-Reranker returned {len(probs)} values per prompt instead of one; its "
                f"hf_overrides were not applied (expected {QWEN3_RERANKER_HF_OVERRIDES})."
            )
        scores[row, 0] = probs[0]
    return scores


class Qwen3RerankerVLLMTeacher(Teacher):
    """Qwen3-Reranker scored with vLLM (``--backend vllm``); see the module docstring for the two paths.

    Args:
        instruction, max_length: as :class:`hf_distill.teachers.models.Qwen3RerankerTeacher` (same default length).
        gpu_memory_utilization, tensor_parallel_size: passed to ``vllm.LLM``; other ``llm_kwargs`` too.
        engine_args: more ``vllm.LLM`` keyword arguments, a mapping or its JSON text (:func:`parse_engine_args`);
            its ``runner`` key picks the path: ``auto`` (pooling where this vLLM has it), ``pooling`` or ``generate``.

    Needs vLLM 0.10.1+ for the pooling path (PoolingParams ``use_activation`` 0.11.1+, ``activation`` 0.10.x), any
    vLLM with the V1 engine for the generate path (exact scores from 0.10.2, ``logprobs_mode``).

    The runner's batches are handed to vLLM whole and vLLM schedules inside them, so use a large
    ``max_tokens_per_batch`` (the default for this backend is 2M prompt tokens per call). Batches keep a query's
    prompts together (``batches_by_query``), so vLLM's prefix cache reuses the shared frame and query.
    """

    kind = CAUSAL_LM
    default_max_tokens_per_batch = 2_000_000
    batches_by_query = True

    def __init__(
        self,
        model_name_or_path: str,
        instruction: str | None = None,
        max_length: int | None = None,
        gpu_memory_utilization: float = 0.9,
        tensor_parallel_size: int = 1,
        engine_args: Mapping[str, Any] | str | None = None,
        **kwargs: Any,
    ) -> None:
        llm_kwargs = {
            k: kwargs.pop(k)
            for k in list(kwargs)
            if k not in ("dtype", "attn_implementation", "device", "trust_remote_code")
        }
        extra = {**llm_kwargs, **parse_engine_args(engine_args)}
        requested_runner = extra.pop("runner", "auto")
        if requested_runner not in RUNNERS:
            raise TeacherConfigError(f"runner must be one of {RUNNERS}, got {requested_runner!r}")
        self.llm_kwargs: dict[str, Any] = {
            "gpu_memory_utilization": gpu_memory_utilization,
            "tensor_parallel_size": tensor_parallel_size,
            # Every prompt starts with the same frame and a query's prompts share its text (batches_by_query).
            "enable_prefix_caching": True,
            **extra,
        }
        # Before anything touches CUDA (the base class resolves dtype="auto" on the GPU).
        gpus_per_engine = int(self.llm_kwargs["tensor_parallel_size"]) * int(
            self.llm_kwargs.get("pipeline_parallel_size", 1)
        )
        devices = local_visible_devices(os.environ, gpus_per_engine)
        if devices is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = devices
        super().__init__(model_name_or_path, max_length=max_length, **kwargs)
        vllm = require_vllm()
        self.instruction = DEFAULT_INSTRUCTION if instruction is None else instruction
        self.tokenizer = self._load_tokenizer()
        if self.max_length is None:  # as the HF backend: the card's 8192, or the checkpoint's own shorter length
            limit = getattr(self.tokenizer, "model_max_length", None)
            saved = int(limit) if limit and limit < 1_000_000 else QWEN3_RERANKER_MAX_LENGTH
            self.max_length = min(QWEN3_RERANKER_MAX_LENGTH, saved)
        try:
            self.prompt = Qwen3RerankerPrompt(self.tokenizer, self.instruction, self.max_length)
            self.yes_id, self.no_id = yes_no_token_ids(self.tokenizer)
        except ValueError as error:  # a max_length below the prompt frame, a tokenizer without yes/no tokens
            raise TeacherConfigError(f"{model_name_or_path}: {error}") from None
        self.pooling_params_kwargs = raw_logit_pooling_params(vllm)
        self.runner = self._choose_runner(requested_runner, vllm)
        self.num_bounded = 0

    def _choose_runner(self, requested: str, vllm: Any) -> str:
        if requested == "generate":
            return "generate"
        if self.pooling_params_kwargs is not None:
            return "pooling"
        version = getattr(vllm, "__version__", "?")
        if requested == "pooling":
            raise TeacherConfigError(
                f"runner 'pooling' was asked for, but this vLLM ({version}) has no pooling runner path for the "
                "reranker (LLM(runner='pooling') with PoolingParams(use_activation=False), vLLM 0.10.1+). "
                "Fix: upgrade vllm, or drop the runner key (the generate runner gives the same score)."
            )
        logger.warning(
            "this vLLM (%s) has no pooling runner path for the reranker; scoring through generate instead "
            "(same score, slower; vllm>=0.10.1 has the pooling runner)",
            version,
        )
        return "generate"

    def fingerprint(self) -> dict[str, Any]:
        # dtype is the base class's resolved one ("auto" -> bfloat16 on a GPU), the one vLLM is given. The runner is
        # kept too: the pooling head runs in fp32, generate's logits come from the lm_head in the model dtype.
        return {**super().fingerprint(), "instruction": self.instruction, "backend": "vllm", "vllm_runner": self.runner}

    def lengths(self, items: Sequence[tuple[str, str]]) -> list[int]:
        return self.prompt.lengths(items)

    def engine_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``vllm.LLM`` for this teacher's path (see the module docstring)."""
        kwargs: dict[str, Any] = {
            "model": self.model_name_or_path,
            "tokenizer": self.model_name_or_path,
            "dtype": str(self.torch_dtype).replace("torch.", ""),
            "trust_remote_code": self.trust_remote_code,
        }
        if self.runner == "pooling":
            # The pooling runner accepts a prompt of exactly max_model_len tokens.
            kwargs.update(
                runner="pooling", hf_overrides=copy.deepcopy(QWEN3_RERANKER_HF_OVERRIDES), max_model_len=self.max_length
            )
        else:
            # The generate runner needs room for the one output token after a prompt cut to max_length.
            kwargs["max_model_len"] = self.max_length + 1
            if "logprobs_mode" in engine_arg_names(require_vllm()):
                kwargs["logprobs_mode"] = "processed_logprobs"  # both answers' logprobs, exact
            else:
                logger.warning(
                    "this vLLM has no logprobs_mode; a score whose other answer is outside the top %d "
                    "logprobs becomes a bound (upgrade to vllm>=0.10.2 for exact scores)",
                    VLLM_MAX_LOGPROBS,
                )
        if self.runner == "generate" and "runner" in engine_arg_names(require_vllm()):
            kwargs["runner"] = "generate"
        return {**self.llm_kwargs, **kwargs}  # the derived arguments win: they keep the length rule

    def _load_model(self) -> Any:
        return require_vllm().LLM(**self.engine_kwargs())

    @property
    def model(self) -> Any:
        if self._model is None:
            logger.info("loading teacher %s with vLLM (%s runner)", self.model_name_or_path, self.runner)
            self._model = self._load_model()
        return self._model

    def prepare_batch(self, items: Sequence[tuple[str, str]]) -> list[dict[str, list[int]]]:
        """The ``TokensPrompt`` of each pair (tokenizer only; no engine call, safe on the runner's prefetch thread)."""
        return vllm_prompts(self.prompt, items)

    def encode(self, items: Sequence[tuple[str, str]]) -> list[list[int]]:
        return self.prompt.encode(items)

    def prepare_encoded(
        self, ids: Sequence[Sequence[int]], query_ids: Sequence[int] | None = None
    ) -> list[dict[str, list[int]]]:
        return [{"prompt_token_ids": list(prompt)} for prompt in ids]

    def run_batch(self, prepared: list[dict[str, list[int]]]) -> np.ndarray:
        """One vLLM call over ``prepared`` prompts: float32 ``[n, 1]`` scores ``z_yes - z_no``."""
        vllm = require_vllm()
        if self.runner == "pooling":
            params = vllm.PoolingParams(**self.pooling_params_kwargs)
            return scores_from_classify(self.model.classify(prepared, pooling_params=params, use_tqdm=False))
        params = vllm.SamplingParams(
            temperature=0.0, max_tokens=1, logprobs=VLLM_MAX_LOGPROBS, allowed_token_ids=[self.yes_id, self.no_id]
        )
        outputs = self.model.generate(prepared, params, use_tqdm=False)
        scores, bounded = scores_from_outputs(outputs, self.yes_id, self.no_id)
        if bounded:
            self.num_bounded += bounded
            logger.warning(
                "%d of %d pairs had yes or no outside vLLM's top-%d logprobs; their scores use the smallest "
                "returned logprob as a bound (%d so far)",
                bounded,
                len(prepared),
                VLLM_MAX_LOGPROBS,
                self.num_bounded,
            )
        return scores
