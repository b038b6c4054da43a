"""Prompts of the Qwen3 ranking models, built token by token as their model cards do.

Qwen3-Reranker (Zhang et al. 2025, "Qwen3 Embedding: Advancing Text Embedding and Reranking Through Foundation
Models") is a causal LM asked a yes/no question in a chat prompt; its relevance score is

.. math::

    s(q, d) = z_{\\text{yes}} - z_{\\text{no}} = \\log p(\\text{yes}) - \\log p(\\text{no})

with :math:`z` the next-token logits after the prompt. The prompt is ``prefix + content + suffix`` in token
ids, where only ``content`` is truncated, so the instruction frame and the answer slot survive any document
length (model card ``process_inputs``)::

    prefix  = "<|im_start|>system\\n{SYSTEM}<|im_end|>\\n<|im_start|>user\\n"
    content = "<Instruct>: {instruction}\\n<Query>: {query}\\n<Document>: {doc}"
    suffix  = "<|im_end|>\\n<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n"

:class:`Qwen3RerankerPrompt` is the one place this is built: the HF and vLLM teachers and the causal-LM student
all call it, so they see the same token ids.

Qwen3-Embedding prefixes *queries only* with ``"Instruct: {task}\\nQuery:{query}"`` (no space after
``Query:``, documents unprefixed; model card ``get_detailed_instruct``): :func:`qwen3_embedding_query`.
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

QWEN3_RERANKER_SYSTEM = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct provided. "
    'Note that the answer can only be "yes" or "no".'
)
QWEN3_RERANKER_PREFIX = f"<|im_start|>system\n{QWEN3_RERANKER_SYSTEM}<|im_end|>\n<|im_start|>user\n"
# The empty think block is what the card's prompt ends with: the model answers without reasoning.
QWEN3_RERANKER_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
QWEN3_RERANKER_CONTENT = "<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}"
# The model card's default task for both Qwen3-Reranker and Qwen3-Embedding.
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
# Qwen3-Reranker was trained with up to 8192 tokens in its card's example; longer costs memory, not accuracy.
QWEN3_RERANKER_MAX_LENGTH = 8192
# A query's candidate prompts share the frame, the instruction and the query (~65 tokens plus the query with Qwen3's
# tokenizer). A common prefix shorter than this is not worth a forward of its own: those prompts run whole.
MIN_SHARED_PREFIX_LENGTH = 8


def qwen3_embedding_query(query: str, instruction: str = DEFAULT_INSTRUCTION) -> str:
    """Qwen3-Embedding's query text: ``"Instruct: {instruction}\\nQuery:{query}"`` (documents stay as they are)."""
    return f"Instruct: {instruction}\nQuery:{query}"


def qwen3_reranker_content(query: str, doc: str, instruction: str = DEFAULT_INSTRUCTION) -> str:
    """The user turn of the Qwen3-Reranker prompt (the only part that is truncated)."""
    return QWEN3_RERANKER_CONTENT.format(instruction=instruction, query=query, doc=doc)


def yes_no_token_ids(tokenizer: Any) -> tuple[int, int]:
    """Token ids of ``"yes"`` and ``"no"``, the two answers whose logit difference is the score.

    Raises:
        ValueError: when either word is not one token of the vocabulary (then the tokenizer is not a Qwen3
            reranker's, and ``logit(yes) - logit(no)`` would not mean anything).
    """
    ids = []
    for word in ("yes", "no"):
        token_id = tokenizer.convert_tokens_to_ids(word)
        if (
            token_id is None
            or token_id == tokenizer.unk_token_id
            or tokenizer.encode(word, add_special_tokens=False) != [token_id]
        ):
            raise ValueError(
                f"the tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no single token for {word!r}, so "
                "it cannot give a yes/no reranker score. Fix: use the tokenizer of a Qwen3-Reranker checkpoint "
                "(or of the causal LM the reranker was fine-tuned from)."
            )
        ids.append(token_id)
    return ids[0], ids[1]


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix of token id lists: the largest :math:`k` with
    :math:`s_{:k} = t_{:k}` for every two sequences :math:`s, t`.

    It is that of the lexicographically smallest and largest sequences alone (any sequence sorts between them, so it
    agrees with both on their common prefix), which two C-level ``min``/``max`` passes find.
    """
    if not sequences:
        return 0
    low, high = min(sequences), max(sequences)
    length, limit = 0, min(len(low), len(high))
    while length < limit and low[length] == high[length]:
        length += 1
    return length


@dataclass
class RerankerBatch:
    """One batch of Qwen3-Reranker prompts as model inputs, built by :meth:`Qwen3RerankerPrompt.batch`.

    A causal decoder's state at token :math:`t` depends on tokens :math:`\\le t` only, so when the prompts
    :math:`x_i` of one query :math:`g` share their first :math:`P_g` tokens, the keys and values of that prefix are
    the same for all of them and the last hidden state is

    .. math:: h_{-1}(x_i) = f\\big(x_{i, P_g:} \\,\\big|\\, \\mathrm{KV}(x_{i, :P_g})\\big)

    with the remainder :math:`x_{i, P_g:}` at positions :math:`P_g, P_g + 1, \\ldots`. So each prefix runs once
    (``prefix``, one row per query), its keys/values go to the query's candidates (``prefix_index``) and only the
    remainders run per candidate: :math:`\\sum_g P_g + \\sum_i (L_i - P_{g(i)})` tokens instead of
    :math:`\\sum_i L_i`. Prompts of a query with one prompt in the batch, or with a short common prefix, run whole
    (``plain``).

    Attributes:
        size: the number of prompts :math:`n`; scores come back in the order of the prompts given.
        plain_rows: ``[n_plain]`` the prompts run whole, in the order of ``plain``'s rows.
        plain: :meth:`Qwen3RerankerPrompt.pad` of those prompts, or ``None`` when there are none.
        shared_rows: ``[m]`` the prompts run on a shared prefix, in the order of ``remainder``'s rows.
        prefix: :meth:`Qwen3RerankerPrompt.pad` of the ``G`` prefixes (``[G, P]``), or ``None``.
        prefix_index: ``[m]`` the ``prefix`` row of each remainder, or ``None``.
        remainder: ``input_ids`` and ``position_ids`` ``[m, R]`` (left padded; positions :math:`P_g + 0, 1, \\ldots`
            for the real tokens) and ``attention_mask`` ``[m, P + R]``: the prefix's mask row, then the
            remainder's (so the remainder's left pads are zeros in the middle); or ``None``.
    """

    size: int
    plain_rows: torch.Tensor
    plain: dict[str, torch.Tensor] | None = None
    shared_rows: torch.Tensor | None = None
    prefix: dict[str, torch.Tensor] | None = None
    prefix_index: torch.Tensor | None = None
    remainder: dict[str, torch.Tensor] | None = None

    def apply(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> RerankerBatch:
        """A copy with ``fn`` applied to every tensor (``pin_memory``, ``to(device)``)."""

        def each(value: Any) -> Any:
            if isinstance(value, torch.Tensor):
                return fn(value)
            if isinstance(value, dict):
                return {key: fn(tensor) for key, tensor in value.items()}
            return value

        return RerankerBatch(**{name: each(getattr(self, name)) for name in self.__dataclass_fields__})

    def token_counts(self) -> dict[str, int]:
        """Tokens the forwards of this batch run: ``real`` (mask ones at the query positions) and ``padded``
        (the input tensors' sizes, pads included), over the plain, prefix and remainder forwards."""
        real = padded = 0
        for inputs in (self.plain, self.prefix, self.remainder):
            if inputs is not None:
                width = inputs["input_ids"].shape[1]  # the remainder's mask also covers the prefix columns
                real += int(inputs["attention_mask"][:, -width:].sum())
                padded += inputs["input_ids"].numel()
        return {"real": real, "padded": padded}


class Qwen3RerankerPrompt:
    """Builds Qwen3-Reranker prompts as token ids: ``prefix + truncated content + suffix``.

    Args:
        tokenizer: the reranker's tokenizer (any ``PreTrainedTokenizerFast`` with the chat tokens).
        instruction: the task description; the model card's web-search default when ``None``.
        max_length: the most tokens a whole prompt may have; only the content is cut (from its end, i.e. the
            document's tail), never the prefix or suffix.

    Example::

        prompt = Qwen3RerankerPrompt(tokenizer, max_length=512)
        ids = prompt.encode([("what is umask", "umask() sets the file mode creation mask ...")])
        batch = prompt.pad(ids)  # left padded: the last column is every prompt's answer position
    """

    def __init__(self, tokenizer: Any, instruction: str | None = None, max_length: int = QWEN3_RERANKER_MAX_LENGTH):
        self.tokenizer = tokenizer
        self.instruction = DEFAULT_INSTRUCTION if instruction is None else instruction
        self.max_length = int(max_length)
        # Encoded once without special tokens: the chat markers are added tokens of the vocabulary.
        self.prefix_ids: list[int] = tokenizer.encode(QWEN3_RERANKER_PREFIX, add_special_tokens=False)
        self.suffix_ids: list[int] = tokenizer.encode(QWEN3_RERANKER_SUFFIX, add_special_tokens=False)
        self.max_content_length = self.max_length - len(self.prefix_ids) - len(self.suffix_ids)
        if self.max_content_length < 1:
            raise ValueError(
                f"max_length={self.max_length} leaves no room for the query and document: the prompt frame alone "
                f"is {len(self.prefix_ids) + len(self.suffix_ids)} tokens. Fix: raise max_length (the card uses 8192)."
            )
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad_id is None:
            raise ValueError("the tokenizer has neither a pad nor an eos token. Fix: set tokenizer.pad_token.")
        self.pad_token_id: int = int(pad_id)

    def encode(self, pairs: Sequence[tuple[str, str]]) -> list[list[int]]:
        """Token ids of each ``(query, doc)`` prompt, at most ``max_length`` long."""
        if not pairs:
            return []
        contents = [qwen3_reranker_content(query, doc, self.instruction) for query, doc in pairs]
        # add_special_tokens=False: Qwen tokenizers add none anyway, and a tokenizer that adds a BOS must not put
        # it in the middle of the prompt.
        encoded = self.tokenizer(
            contents, add_special_tokens=False, truncation=True, max_length=self.max_content_length
        )["input_ids"]
        return [self.prefix_ids + ids + self.suffix_ids for ids in encoded]

    def lengths(self, pairs: Sequence[tuple[str, str]]) -> list[int]:
        """Prompt lengths in tokens, as :meth:`encode` would build them."""
        return [len(ids) for ids in self.encode(pairs)]

    def pad(
        self, input_ids: Sequence[Sequence[int]], device: torch.device | str | None = None
    ) -> dict[str, torch.Tensor]:
        """Left-pad prompts into ``input_ids``, ``attention_mask`` and ``position_ids`` tensors.

        Left padding puts every prompt's last token in the last column, where the answer is read. Positions
        count real tokens only, so a prompt gets the same rotary positions (0, 1, ...) whatever its padding,
        as it does unpadded or in vLLM.
        """
        width = max(len(ids) for ids in input_ids)
        ids = torch.full((len(input_ids), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(input_ids), width), dtype=torch.long)
        for row, seq in enumerate(input_ids):
            ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq) :] = 1
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        batch = {"input_ids": ids, "attention_mask": mask, "position_ids": positions}
        return {key: value.to(device) for key, value in batch.items()} if device is not None else batch

    def batch(
        self,
        input_ids: Sequence[Sequence[int]],
        groups: Sequence[Hashable] | None = None,
        min_prefix_length: int = MIN_SHARED_PREFIX_LENGTH,
    ) -> RerankerBatch:
        """Model inputs for the prompts ``input_ids`` (from :meth:`encode`), split by shared prefix.

        ``groups`` gives each prompt a key (its query); prompts with the same key share their longest common
        prefix of token ids, :math:`P_g = \\min(\\mathrm{LCP}_g, \\min_i L_i - 1)`: exact by construction (no
        re-tokenization), and it leaves every prompt at least its last token, where the score is read. A key
        with one prompt, or with :math:`P_g` below ``min_prefix_length``, runs its prompts whole; so does every
        prompt when ``groups`` is ``None``. See :class:`RerankerBatch` for the tensors.
        """
        members: dict[Hashable, list[int]] = {}
        for row, key in enumerate(range(len(input_ids)) if groups is None else groups):
            members.setdefault(key, []).append(row)
        plain_rows: list[int] = []
        shared_rows: list[int] = []
        prefixes: list[Sequence[int]] = []
        prefix_index: list[int] = []
        remainders: list[Sequence[int]] = []
        for rows in members.values():
            prompts = [input_ids[row] for row in rows]
            length = 0
            if len(rows) > 1:
                length = min(common_prefix_length(prompts), min(len(ids) for ids in prompts) - 1)
            if length < max(min_prefix_length, 1):
                plain_rows.extend(rows)
                continue
            prefix_index.extend([len(prefixes)] * len(rows))
            prefixes.append(prompts[0][:length])
            shared_rows.extend(rows)
            remainders.extend(ids[length:] for ids in prompts)
        batch = RerankerBatch(size=len(input_ids), plain_rows=torch.tensor(plain_rows, dtype=torch.long))
        if plain_rows:
            batch.plain = self.pad([input_ids[row] for row in plain_rows])
        if prefixes:
            index = torch.tensor(prefix_index, dtype=torch.long)
            lengths = torch.tensor([len(ids) for ids in prefixes], dtype=torch.long)
            prefix, remainder = self.pad(prefixes), self.pad(remainders)
            remainder["position_ids"] = remainder["position_ids"] + lengths[index].unsqueeze(1)
            remainder["attention_mask"] = torch.cat([prefix["attention_mask"][index], remainder["attention_mask"]], 1)
            batch.shared_rows, batch.prefix, batch.prefix_index, batch.remainder = (
                torch.tensor(shared_rows, dtype=torch.long),
                prefix,
                index,
                remainder,
            )
        return batch


def qwen3_reranker_chat_template(instruction: str | None = None) -> str:
    """A chat template that renders a ``query``/``document`` message pair as the Qwen3-Reranker prompt.

    Saved with a causal-LM reranker student, it lets ``sentence_transformers.CrossEncoder(path)`` (v6+: a
    ``*ForCausalLM`` checkpoint loads as ``Transformer`` + ``LogitScore(yes, no)``, and pairs become ``query`` and
    ``document`` messages) build the same token ids as :class:`Qwen3RerankerPrompt` and give the same score.
    ``CrossEncoder.predict(pairs, prompt=...)`` arrives as a ``system`` message and replaces ``instruction``.
    Conversations without that pair render as plain ChatML. Prompts longer than the model's ``max_seq_length``
    are cut differently (sentence-transformers cuts the rendered prompt's end and writes the suffix back; this
    module cuts the document), so scores agree for prompts that fit.
    """
    instruction = DEFAULT_INSTRUCTION if instruction is None else instruction
    literal = json.dumps  # a Jinja string literal: JSON's escapes are Python's
    fields = {
        "instruction": f"(system[0] if system else {literal(instruction)})",
        "query": "query[0]",
        "doc": "document[0]",
    }
    # The content line comes from QWEN3_RERANKER_CONTENT itself, so the two cannot drift apart.
    content = " ~ ".join(
        part
        for text, name, _, _ in string.Formatter().parse(QWEN3_RERANKER_CONTENT)
        for part in ([literal(text)] if text else []) + ([fields[name]] if name else [])
    )
    return (
        '{%- set query = messages | selectattr("role", "eq", "query") | map(attribute="content") | list -%}\n'
        '{%- set document = messages | selectattr("role", "eq", "document") | map(attribute="content") | list -%}\n'
        '{%- set system = messages | selectattr("role", "eq", "system") | map(attribute="content") | list -%}\n'
        "{%- if query and document -%}\n"
        f"{{{{- {literal(QWEN3_RERANKER_PREFIX)} ~ {content} ~ {literal(QWEN3_RERANKER_SUFFIX)} -}}}}\n"
        "{%- else -%}\n"
        "{%- for message in messages -%}\n"
        '{{- "<|im_start|>" ~ message.role ~ "\\n" ~ message.content ~ "<|im_end|>\\n" -}}\n'
        "{%- endfor -%}\n"
        '{%- if add_generation_prompt -%}{{- "<|im_start|>assistant\\n" -}}{%- endif -%}\n'
        "{%- endif -%}\n"
    )
