"""The sentence-transformers checkpoint format: pooling, and the files that declare it, read and written once.

A sentence-transformers checkpoint is a transformers checkpoint plus a few JSON files: ``modules.json`` (the
module list: Transformer, Pooling, optionally Normalize), ``1_Pooling/config.json`` (which pooling),
``sentence_bert_config.json`` (``max_seq_length``) and ``config_sentence_transformers.json`` (prompts, similarity).
Teachers, students, evaluation and the model card all read them through :func:`read_sentence_transformers_config`,
bi-encoder students are saved with :func:`write_sentence_transformers_config`, and every embedding is pooled by
the one :func:`pool`, so a teacher, the student it trains and the evaluation of both agree on what a checkpoint
means. Files are read from a local folder, or for a Hub id through the Hub or, offline, the local Hub cache.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Literal

import torch

from .errors import ConfigError

__all__ = [
    "POOLING_MODES",
    "Pooling",
    "checkpoint_file",
    "declared_pooling",
    "pool",
    "read_json",
    "read_sentence_transformers_config",
    "write_sentence_transformers_config",
]

logger = logging.getLogger("hf_distill")

Pooling = Literal["cls", "mean", "last"]
POOLING_MODES = ("cls", "mean", "last")


def checkpoint_file(model_name_or_path: str, filename: str) -> str | None:
    """Local path of ``filename`` in a checkpoint directory or Hub repo, ``None`` when it has no such file."""
    if os.path.isdir(model_name_or_path):
        path = os.path.join(model_name_or_path, filename)
        return path if os.path.isfile(path) else None
    try:
        from huggingface_hub import hf_hub_download

        return hf_hub_download(model_name_or_path, filename)
    except Exception:  # not on the Hub, offline, or the file does not exist: all mean "no such file" here
        return None


def read_json(path: str | None) -> dict | list | None:
    """The JSON content of ``path``, or ``None`` for no path."""
    if path is None:
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def pool(hidden_states: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool token states ``[T, L, H]`` into one vector per text ``[T, H]``.

    * ``cls``: the first token (BERT / XLM-R / bge-m3).
    * ``mean``: the mean over real tokens (all-MiniLM, E5).
    * ``last``: the last real token, whatever the padding side: the index of the last 1 in each row of the mask
      (Qwen3-Embedding and other decoder embedders).
    """
    if pooling == "cls":
        return hidden_states[:, 0]
    if pooling == "mean":
        mask = attention_mask.unsqueeze(-1).to(hidden_states.dtype)
        return (hidden_states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    if pooling == "last":
        width = attention_mask.shape[1]
        last = width - 1 - attention_mask.flip(1).argmax(dim=1)
        return hidden_states[torch.arange(hidden_states.shape[0], device=hidden_states.device), last]
    raise ConfigError(f"pooling must be one of {POOLING_MODES}, got {pooling!r}.")


def read_sentence_transformers_config(model_name_or_path: str) -> dict[str, Any] | None:
    """Pooling, normalisation, max length and prompts of a sentence-transformers checkpoint, from its own files.

    Reads ``modules.json`` (module list), the Transformer module's ``sentence_bert_config.json``
    (``max_seq_length``, ``do_lower_case``), ``1_Pooling/config.json`` (legacy ``pooling_mode_*`` flags or the
    newer ``pooling_mode`` key) and ``config_sentence_transformers.json`` (``prompts``). Returns ``None`` for a
    plain transformers checkpoint (no ``modules.json``).

    Raises:
        ConfigError: for modules hf_distill does not reproduce (Dense projections, max pooling, ...).
    """
    modules = read_json(checkpoint_file(model_name_or_path, "modules.json"))
    if modules is None:
        return None
    info: dict[str, Any] = {
        "transformer_path": "",
        "pooling": None,
        "include_prompt": True,
        "normalize": False,
        "max_seq_length": None,
        "do_lower_case": False,
    }
    for module in modules:
        kind = module.get("type", "").rsplit(".", 1)[-1]
        path = module.get("path", "")
        if kind == "Transformer":
            info["transformer_path"] = path
            config_name = f"{path}/sentence_bert_config.json" if path else "sentence_bert_config.json"
            st_config = read_json(checkpoint_file(model_name_or_path, config_name)) or {}
            info["max_seq_length"] = st_config.get("max_seq_length")
            info["do_lower_case"] = bool(st_config.get("do_lower_case", False))
        elif kind == "Pooling":
            info["pooling"], info["include_prompt"] = _read_pooling_config(model_name_or_path, path)
        elif kind == "Normalize":
            info["normalize"] = True
        elif kind not in ("Dropout",):
            raise ConfigError(
                f"{model_name_or_path}: sentence-transformers module {module.get('type')!r} ({path}) is not supported "
                "(hf_distill reproduces Transformer + Pooling + Normalize). Fix: score with sentence-transformers "
                "yourself and pass the listwise file to training, or drop the module."
            )
    if info["transformer_path"]:
        raise ConfigError(
            f"{model_name_or_path}: the Transformer module lives in the sub-folder {info['transformer_path']!r}. "
            f"Fix: pass {os.path.join(model_name_or_path, info['transformer_path'])} as the checkpoint "
            "and --pooling explicitly."
        )
    st_main = read_json(checkpoint_file(model_name_or_path, "config_sentence_transformers.json")) or {}
    info["prompts"] = st_main.get("prompts") or {}
    return info


def _read_pooling_config(model_name_or_path: str, path: str) -> tuple[str | None, bool]:
    config_file = checkpoint_file(model_name_or_path, f"{path}/config.json")
    if config_file is None:  # declared in modules.json but not readable here (partial cache): never guess it
        logger.warning(
            "%s: modules.json declares a Pooling module but %s/config.json cannot be read: pooling unknown",
            model_name_or_path,
            path,
        )
        return None, True
    config = read_json(config_file) or {}
    names = {"cls": "cls", "mean": "mean", "lasttoken": "last"}
    legacy = {
        "pooling_mode_cls_token": "cls",
        "pooling_mode_mean_tokens": "mean",
        "pooling_mode_lasttoken": "lasttoken",
        "pooling_mode_max_tokens": "max",
        "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
        "pooling_mode_weightedmean_tokens": "weightedmean",
    }
    modes = config.get("pooling_mode")
    if modes is None:
        modes = [mode for key, mode in legacy.items() if config.get(key)] or ["mean"]
    modes = [modes] if isinstance(modes, str) else list(modes)
    if len(modes) != 1 or modes[0] not in names:
        raise ConfigError(
            f"{model_name_or_path}/{path}/config.json: pooling {modes} is not supported (only one of cls, mean, "
            "lasttoken). Fix: pass --pooling cls|mean|last to override it, if that is what the model was trained with."
        )
    return names[modes[0]], bool(config.get("include_prompt", True))


def declared_pooling(name_or_path: str | None) -> tuple[str, bool] | None:
    """``(pooling, normalize)`` a sentence-transformers checkpoint declares, or ``None`` if it declares none.

    ``None`` for a plain transformers checkpoint, or one whose ``1_Pooling/config.json`` cannot be read (never
    guessed). Raises :class:`ConfigError` for a pooling hf_distill does not reproduce.
    """
    if not name_or_path:
        return None
    info = read_sentence_transformers_config(str(name_or_path))
    if info is None or info.get("pooling") is None:
        return None
    return info["pooling"], bool(info.get("normalize"))


def write_sentence_transformers_config(
    output_dir: str,
    *,
    pooling: str,
    normalize: bool,
    similarity: str,
    max_length: int,
    query_prefix: str = "",
    passage_prefix: str = "",
) -> None:
    """Write the sentence-transformers files beside a saved bi-encoder, so ``SentenceTransformer(output_dir)``
    embeds exactly as the student was trained: same pooling, normalisation (a ``Normalize`` module when
    ``normalize`` or cosine similarity), ``max_seq_length``, similarity and query / document prompts.
    """
    if pooling not in POOLING_MODES:
        raise ConfigError(f"pooling must be one of {POOLING_MODES}, got {pooling!r}.")
    config_path = os.path.join(output_dir, "config.json")
    hidden_size = (read_json(config_path) or {}).get("hidden_size") if os.path.exists(config_path) else None
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]
    modules.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"})
    if normalize or similarity == "cosine":
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        os.makedirs(os.path.join(output_dir, "2_Normalize"), exist_ok=True)
    os.makedirs(os.path.join(output_dir, "1_Pooling"), exist_ok=True)
    pooling_config = {
        "word_embedding_dimension": hidden_size,
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": pooling == "last",
        "include_prompt": True,
    }
    files = {
        "modules.json": modules,
        "1_Pooling/config.json": pooling_config,
        "sentence_bert_config.json": {"max_seq_length": max_length, "do_lower_case": False},
        "config_sentence_transformers.json": {
            "similarity_fn_name": "cosine" if similarity == "cosine" else "dot",
            "prompts": {"query": query_prefix, "document": passage_prefix},
            "default_prompt_name": None,
        },
    }
    for name, content in files.items():
        with open(os.path.join(output_dir, name), "w", encoding="utf-8") as f:
            json.dump(content, f, indent=2)
