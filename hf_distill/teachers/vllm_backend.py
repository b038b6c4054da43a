"""vLLM backend for the Qwen3-Reranker teacher: same prompt token ids, same score, higher throughput.

Each prompt is built by :class:`hf_distill.prompts.Qwen3RerankerPrompt` (the HF backend's builder) and given to
vLLM as token ids, so both backends see identical inputs. vLLM generates one token restricted to
``{yes, no}`` and returns its log-probabilities; both answers' come from one softmax, so

.. math:: \\log p(\\text{yes}) - \\log p(\\text{no}) = z_{\\text{yes}} - z_{\\text{no}}

is the same score as the HF backend's logit difference (the log-normaliser cancels).

Where vLLM has ``logprobs_mode`` (0.10.2 and later), the engine is started with ``"processed_logprobs"``: the
log-probabilities are then taken after the ``{yes, no}`` restriction (and before any temperature: decoding is
greedy), so both answers are always returned and their difference is exactly :math:`z_{yes} - z_{no}`. Older
vLLM returns the raw distribution's top 20 plus the sampled token; the sampled one is whichever of yes/no is
more likely, so at least one is there, and when the other is not in the top 20 (the model is very sure) the
smallest returned log-probability bounds it and is used. How often that happened is logged.

vLLM needs a GPU and is not a dependency of hf_distill: ``pip install vllm``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from hf_distill.errors import MissingDependencyError
from hf_distill.kinds import CAUSAL_LM
from hf_distill.prompts import DEFAULT_INSTRUCTION, QWEN3_RERANKER_MAX_LENGTH, Qwen3RerankerPrompt, yes_no_token_ids
from hf_distill.teachers.models import Teacher

logger = logging.getLogger("hf_distill")

VLLM_MAX_LOGPROBS = 20  # vLLM's default cap on returned logprobs per position


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


class Qwen3RerankerVLLMTeacher(Teacher):
    """Qwen3-Reranker scored with vLLM (``--backend vllm``); see the module docstring for the score.

    Args:
        instruction, max_length: as :class:`hf_distill.teachers.models.Qwen3RerankerTeacher`.
        gpu_memory_utilization, tensor_parallel_size: passed to ``vllm.LLM``; other ``llm_kwargs`` too.

    The runner's batches are handed to ``LLM.generate`` whole; vLLM schedules inside them, so use a large
    ``max_tokens_per_batch`` (the default for this backend is 2M prompt tokens per call).
    """

    kind = CAUSAL_LM
    default_max_tokens_per_batch = 2_000_000

    def __init__(
        self,
        model_name_or_path: str,
        instruction: str | None = None,
        max_length: int | None = None,
        gpu_memory_utilization: float = 0.9,
        tensor_parallel_size: int = 1,
        **kwargs: Any,
    ) -> None:
        llm_kwargs = {
            k: kwargs.pop(k)
            for k in list(kwargs)
            if k not in ("dtype", "attn_implementation", "device", "trust_remote_code")
        }
        super().__init__(model_name_or_path, max_length=max_length or QWEN3_RERANKER_MAX_LENGTH, **kwargs)
        require_vllm()
        self.instruction = DEFAULT_INSTRUCTION if instruction is None else instruction
        self.tokenizer = self._load_tokenizer()
        self.prompt = Qwen3RerankerPrompt(self.tokenizer, self.instruction, self.max_length)
        self.yes_id, self.no_id = yes_no_token_ids(self.tokenizer)
        self.llm_kwargs = dict(
            gpu_memory_utilization=gpu_memory_utilization, tensor_parallel_size=tensor_parallel_size, **llm_kwargs
        )
        self.num_bounded = 0

    def fingerprint(self) -> dict[str, Any]:
        base = super().fingerprint()
        base["dtype"] = self.dtype_name
        return {**base, "instruction": self.instruction, "backend": "vllm"}

    def lengths(self, items: Sequence[tuple[str, str]]) -> list[int]:
        return self.prompt.lengths(items)

    def _load_model(self) -> Any:
        vllm = require_vllm()
        world_size = int(os.environ.get("WORLD_SIZE", 1))
        if world_size > 1 and "CUDA_VISIBLE_DEVICES" not in os.environ:
            # Under `accelerate launch`, give each process its own GPU: vLLM always uses the first visible one.
            os.environ["CUDA_VISIBLE_DEVICES"] = os.environ.get("LOCAL_RANK", "0")
        extra: dict[str, Any] = {}
        engine_fields = {f.name for f in dataclasses.fields(vllm.EngineArgs)} if hasattr(vllm, "EngineArgs") else set()
        if "logprobs_mode" in engine_fields:
            extra["logprobs_mode"] = "processed_logprobs"  # both answers' logprobs, exact; see the module docstring
        else:
            logger.warning(
                "this vLLM has no logprobs_mode; a score whose other answer is outside the top %d "
                "logprobs becomes a bound (upgrade to vllm>=0.10.2 for exact scores)",
                VLLM_MAX_LOGPROBS,
            )
        return vllm.LLM(
            model=self.model_name_or_path,
            tokenizer=self.model_name_or_path,
            dtype=self.dtype_name,
            max_model_len=self.max_length,
            # Every prompt starts with the same ~60-token system frame, and a query's prompts share its text.
            enable_prefix_caching=True,
            trust_remote_code=self.trust_remote_code,
            **extra,
            **self.llm_kwargs,
        )

    @property
    def model(self) -> Any:
        if self._model is None:
            logger.info("loading teacher %s with vLLM", self.model_name_or_path)
            self._model = self._load_model()
        return self._model

    def score_batch(self, items: Sequence[tuple[str, str]]) -> np.ndarray:
        vllm = require_vllm()
        params = vllm.SamplingParams(
            temperature=0.0, max_tokens=1, logprobs=VLLM_MAX_LOGPROBS, allowed_token_ids=[self.yes_id, self.no_id]
        )
        outputs = self.model.generate(vllm_prompts(self.prompt, items), params, use_tqdm=False)
        scores, bounded = scores_from_outputs(outputs, self.yes_id, self.no_id)
        if bounded:
            self.num_bounded += bounded
            logger.warning(
                "%d of %d pairs had yes or no outside vLLM's top-%d logprobs; their scores use the smallest "
                "returned logprob as a bound (%d so far)",
                bounded,
                len(items),
                VLLM_MAX_LOGPROBS,
                self.num_bounded,
            )
        return scores
