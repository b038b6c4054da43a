"""The student model: its arguments, loading, LoRA, and saving as a plain checkpoint (LoRA merged).

What TRL's ``ModelConfig`` + ``get_peft_config`` and alignment-handbook's ``get_model`` do for their recipes:

* :class:`ModelArguments` - the ``--model_name_or_path``, ``--num_hidden_layers``, ``--torch_dtype``, LoRA flags;
* :func:`load_student` - tokenizer + model for a ``reranker`` (a one-logit sequence classifier, a fresh head when the
  checkpoint has none, or a ``*ForCausalLM`` yes/no reranker) or an ``embedding`` student (``AutoModel``, pooler
  frozen); one :class:`~hf_distill.cli.ConfigError` when the checkpoint cannot be loaded;
* :func:`wrap_lora` - LoRA on every attention and MLP projection of a decoder, peft's choice otherwise;
* :func:`save_student` - a plain checkpoint: a LoRA adapter is merged in fp32 into the base as trained, the same
  under DDP, ZeRO-3 and on one CPU.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
from transformers.utils import logging as hf_logging

from .errors import ConfigError
from .kinds import CAUSAL_LM, STUDENT_TYPES, Task, check_task, is_causal_lm, is_causal_lm_checkpoint
from .students import mark_fresh_head
from .trainer import write_student_sentence_transformers_config

logger = logging.getLogger("hf_distill")


@dataclass
class ModelArguments:
    """The student model and its LoRA adapter."""

    model_name_or_path: str = field(default=None, metadata={"help": "Student checkpoint (Hub id or local dir)."})
    num_hidden_layers: int | None = field(
        default=None, metadata={"help": "Keep only the first N transformer layers of the student (a smaller student)."}
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow the checkpoint's own modelling code."})
    torch_dtype: str | None = field(
        default=None, metadata={"help": "Weights dtype at load: float32, bfloat16, float16 (mixed precision: --bf16)."}
    )
    attn_implementation: str | None = field(default=None, metadata={"help": "eager, sdpa or flash_attention_2 (GPU)."})
    use_peft: bool = field(default=False, metadata={"help": "Train a LoRA adapter instead of all weights."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (scale = alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={
            "help": "Module names that get adapters (default: every attention and MLP projection of a "
            "decoder (q/k/v/o/gate/up/down_proj), else peft's choice for the architecture; 'all-linear' for "
            "every linear layer)."
        },
    )


def load_student(task: Task, model_args: ModelArguments, student_type: str = "auto") -> tuple[torch.nn.Module, Any]:
    """Load ``(model, tokenizer)`` of a ``reranker`` or ``embedding`` student; a reranker without a one-logit head gets a fresh one (with a note in the log).

    A reranker whose checkpoint is a ``*ForCausalLM`` (Qwen3-Reranker, Qwen3) loads as that causal LM and is
    trained as a yes/no reranker (``student_type`` auto or causal_lm); ``student_type=cross_encoder`` gives it a
    sequence-classification head instead. A checkpoint that cannot be found or loaded is one ConfigError.
    """
    check_task(task)
    if not model_args.model_name_or_path:
        raise ConfigError("--model_name_or_path is required: the student checkpoint to distil into.")
    if model_args.torch_dtype is not None and not isinstance(getattr(torch, model_args.torch_dtype, None), torch.dtype):
        raise ConfigError(
            f"--torch_dtype {model_args.torch_dtype!r} is not a torch dtype. Fix: float32, bfloat16 or float16."
        )
    try:
        return _load_checkpoint(task, model_args, student_type)
    except ImportError as error:  # e.g. attn_implementation flash_attention_2 without the flash-attn package
        raise ConfigError(f"cannot load the student {model_args.model_name_or_path}: {error}") from None
    except OSError as error:  # not found locally, not on the Hub or offline, or a broken checkpoint
        raise ConfigError(
            f"cannot load the student {model_args.model_name_or_path}: {str(error).strip().rstrip('.')}. Fix: check "
            "the path or Hub id (offline, HF_HUB_OFFLINE=1 needs it in the local Hub cache)."
        ) from None


def _load_checkpoint(task: Task, model_args: ModelArguments, student_type: str):
    kwargs: dict[str, Any] = {"trust_remote_code": model_args.trust_remote_code}
    if model_args.num_hidden_layers is not None:
        kwargs["num_hidden_layers"] = model_args.num_hidden_layers
    if model_args.torch_dtype is not None:
        kwargs["dtype"] = getattr(torch, model_args.torch_dtype)
    if model_args.attn_implementation is not None:
        kwargs["attn_implementation"] = model_args.attn_implementation
    tokenizer = AutoTokenizer.from_pretrained(
        model_args.model_name_or_path, trust_remote_code=model_args.trust_remote_code
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if task == "embedding":
        model = AutoModel.from_pretrained(model_args.model_name_or_path, **kwargs)
        # BERT / XLM-R encoders carry a pooler (dense + tanh over CLS) that no bi-encoder loss reads: trainable
        # and unused, it breaks DDP when activation checkpointing turns off find_unused_parameters. Frozen, it
        # stays in the checkpoint unchanged, as sentence-transformers expects.
        pooler = getattr(model, "pooler", None)
        if isinstance(pooler, torch.nn.Module):
            pooler.requires_grad_(False)
        return model, tokenizer
    if _loads_as_causal_lm(model_args, student_type):
        return AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, **kwargs), tokenizer
    # Silence the generic "newly initialized" warning: we say it ourselves, once, in plain words.
    with quiet_transformers_warnings():
        model, info = AutoModelForSequenceClassification.from_pretrained(
            model_args.model_name_or_path,
            num_labels=1,
            ignore_mismatched_sizes=True,
            output_loading_info=True,
            **kwargs,
        )
    fresh = [k for k in info.get("missing_keys", []) if "classifier" in k or "score" in k]
    fresh += [k for k in info.get("mismatched_keys", [])]
    if fresh:
        mark_fresh_head(model)
        logger.warning(
            "%s has no one-logit classification head: added a freshly initialised one (num_labels=1). "
            "Its scores are random until distillation trains it.",
            model_args.model_name_or_path,
        )
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


@contextlib.contextmanager
def quiet_transformers_warnings() -> Iterator[None]:
    """Only errors from transformers' logger inside the block (its loading-report warnings are ours to word)."""
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)


def _loads_as_causal_lm(model_args: ModelArguments, student_type: str) -> bool:
    if student_type not in STUDENT_TYPES:
        raise ConfigError(f"--student_type must be one of {STUDENT_TYPES}, got {student_type!r}.")
    if student_type != "auto":
        return student_type == CAUSAL_LM
    return is_causal_lm_checkpoint(model_args.model_name_or_path, model_args.trust_remote_code)


# Attention and MLP projections of Qwen3 / Llama / Mistral decoders: LoRA on all of them is what LLM rerankers
# and embedders are fine-tuned with (peft's own default for these models is q_proj and v_proj only).
DECODER_LORA_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def wrap_lora(task: Task, model: torch.nn.Module, model_args: ModelArguments) -> torch.nn.Module:
    from peft import LoraConfig, TaskType, get_peft_model

    target_modules = model_args.lora_target_modules
    module_names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    if target_modules is None and set(DECODER_LORA_TARGET_MODULES) <= module_names:
        target_modules = DECODER_LORA_TARGET_MODULES
    if is_causal_lm(model):
        task_type = TaskType.CAUSAL_LM  # lm_head stays frozen: only its yes/no rows are read
    else:
        task_type = TaskType.SEQ_CLS if task == "reranker" else TaskType.FEATURE_EXTRACTION
    config = LoraConfig(
        task_type=task_type,
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=target_modules,
    )
    model = get_peft_model(model, config)
    trainable, total = model.get_nb_trainable_parameters()
    logger.info("LoRA: training %d of %d parameters (%.2f%%)", trainable, total, 100 * trainable / total)
    return model


def save_student(task: Task, trainer: Any, tokenizer: Any, model_args: ModelArguments, output_dir: str) -> None:
    """Save a plain checkpoint. A LoRA adapter is saved, reloaded onto the base weights and merged on the main
    process, which works the same under DDP, ZeRO-3 (where weights are sharded) and on one CPU."""
    # A model that carries an adapter has peft_config (PeftModel, or transformers' own adapter loading); peft is
    # imported only then.
    if not hasattr(trainer.model, "peft_config"):
        trainer.save_model(output_dir)
        return
    from peft import PeftModel

    adapter_dir = os.path.join(output_dir, "lora_adapter")
    trainer.save_model(adapter_dir)
    trainer.accelerator.wait_for_everyone()
    if trainer.args.should_save:
        with without_zero3_partitioning():
            # Merged in fp32 and saved in fp32: added into bf16 base weights, every part of the update below half
            # a bf16 ulp of the weight would be lost (most of a small LoRA update), and the saved student would
            # not be the model that was trained and evaluated.
            # The base is loaded as it was trained (e.g. bf16 weights), then widened: the merged model computes
            # exactly what the trained adapter model computed.
            base, _ = load_student(task, model_args, trainer.args.student_type)
            merged = PeftModel.from_pretrained(base.to(torch.float32), adapter_dir).merge_and_unload()
            merged.save_pretrained(output_dir)
        tokenizer.save_pretrained(output_dir)
        if task == "embedding":
            write_student_sentence_transformers_config(output_dir, trainer.scorer, trainer.args)
        logger.info("merged the LoRA adapter into %s (adapter kept in %s)", output_dir, adapter_dir)
    trainer.accelerator.wait_for_everyone()


@contextlib.contextmanager
def without_zero3_partitioning() -> Iterator[None]:
    """``from_pretrained`` of whole tensors in one process while a ZeRO-3 run is on. Under ZeRO-3 (with
    ``zero3_init_flag``) transformers loads into ``deepspeed.zero.Init``, which partitions every tensor across all
    ranks and waits for them: the main process merging a LoRA adapter alone would hang there."""
    from transformers.integrations import deepspeed as hf_deepspeed

    previous = hf_deepspeed._hf_deepspeed_config_weak_ref  # no public getter; set/unset are public
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = previous
