"""Tiny models built offline for tests: plain functions, so any test file can import them.

``build_tiny_qwen3_reranker(tmp_path)`` saves a randomly initialised 2-layer ``Qwen3ForCausalLM`` with a byte-level
BPE tokenizer trained on the spot (``tokenizers`` library). The tokenizer knows the Qwen3 chat tokens
(``<|im_start|>``, ``<|im_end|>``, ``<think>``, ``</think>``, ``<|endoftext|>``), has ``"yes"`` and ``"no"`` as
single tokens and pads on the left, like the real Qwen3-Reranker's, so every code path of the teacher and of a
causal-LM student runs on it.
"""

from __future__ import annotations

import random
from pathlib import Path

QWEN3_CHAT_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]

_WORDS = (
    "linux file system process memory network socket kernel user group permission directory list copy move "
    "remove archive compress print display manual page terminal shell script variable command option query "
    "document instruct judge whether meets requirements based provided answer given web search retrieve "
    "relevant passages that the a of to and is in for with"
).split()


def _training_corpus(seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lines = [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 12))) for _ in range(400)]
    # Lines that are just the answers make the BPE merge them into single tokens without a leading space,
    # which is how the reranker reads them after "</think>\n\n".
    lines += ["yes", "no"] * 200
    lines += ["<Instruct>: <Query>: <Document>: Judge whether the Document meets the requirements"] * 20
    return lines


def build_tiny_qwen3_tokenizer(save_dir: str | Path):
    """Train a byte-level BPE (vocab 600) offline and save it as a left-padding ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=QWEN3_CHAT_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_training_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
        model_max_length=4096,
    )
    for word in ("yes", "no"):
        assert fast.encode(word, add_special_tokens=False) == [fast.convert_tokens_to_ids(word)], word
    fast.save_pretrained(save_dir)
    return fast


def tiny_qwen3_config(tokenizer, **overrides):
    """A 2-layer, 32-wide ``Qwen3Config`` for ``tokenizer`` (pad and eos from it), ``initializer_range=0.2`` so
    that ``logit(yes) - logit(no)`` varies by whole units between prompts; ``overrides`` set any other field."""
    from transformers import Qwen3Config

    values = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        initializer_range=0.2,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    values.update(overrides)
    return Qwen3Config(**values)


def build_tiny_qwen3_reranker(tmp_path: str | Path, seed: int = 0, name: str = "tiny-qwen3-reranker") -> str:
    """Save a tiny Qwen3 causal LM + tokenizer under ``tmp_path/name`` and return that path.

    Weights are drawn with ``initializer_range=0.2`` (not 0.02) so that ``logit(yes) - logit(no)`` varies by
    whole units between prompts, and a wrong position or token id shows up clearly in a test.
    """
    import torch
    from transformers import Qwen3ForCausalLM

    path = Path(tmp_path) / name
    tokenizer = build_tiny_qwen3_tokenizer(path)
    config = tiny_qwen3_config(tokenizer, max_position_embeddings=4096, tie_word_embeddings=False, bos_token_id=None)
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config).eval()
    model.save_pretrained(path)
    return str(path)


def build_minilm_cross_encoder(minilm_path: str, save_dir: str | Path) -> str:
    """A ``BertForSequenceClassification`` (num_labels=1) made from the real MiniLM weights plus a fresh head.

    Not a trained reranker, but real-sized and real-text: what the throughput benchmark and cross-encoder tests
    need to compare code paths on the same weights.
    """
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(minilm_path, num_labels=1)
    model.save_pretrained(save_dir)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(save_dir)
    return str(save_dir)
