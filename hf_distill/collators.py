"""Collators: turn B listwise groups into what one student step needs, flattening exactly once.

Both collators take rows ``{query, passages[], scores[], labels[]}`` (see :mod:`hf_distill.data`) and return::

    {
        "teacher_scores":  FloatTensor [B, N]   raw teacher scores, 0 where padded
        "candidate_mask":  BoolTensor  [B, N]   True for real candidates
        "relevance_labels": LongTensor [B, N]   1 relevant, 0 not, -1 unknown or padded
        "micro_batches":   list of padded tokenizer outputs, sorted by length
        "pair_index" [B, N] (cross-encoder)  or  "query_index" [B] + "passage_index" [B, N] (bi-encoder):
                           positions in the concatenation of the micro-batches' rows, -1 where padded
        "num_real_tokens", "num_padded_tokens": scalar LongTensors, to log the padding waste
    }

Why this shape:

* **Each unique item is run once.** A (query, passage) pair (cross-encoder) or a text (bi-encoder) that occurs
  several times in the batch is tokenized and scored once; every loss reads the ``[B, N]`` matrix. The
  reference practice expanded each query into 32 triplets and scored 64 pairs for 12-16 distinct ones.
* **Little padding.** Items are sorted by token length and cut into micro-batches whose padded size stays under
  ``micro_batch_max_tokens``, so each micro-batch is padded only to its own longest item.
* **Candidate sampling.** With ``group_size`` set, each group keeps its labelled positives, the teacher's top
  ``top_fraction * group_size`` candidates, and fills the rest at random, so the student sees the hard head of
  the teacher's ranking and a sample of its tail.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from .prompts import Qwen3RerankerPrompt

# Column of a training dataset holding each group's position: the key of its candidate sample.
GROUP_INDEX_COLUMN = "group_index"


@dataclass
class CandidateSampler:
    """Pick at most ``group_size`` candidates of a group for one training step.

    Order of preference: labelled positives (unless ``keep_labelled_positives=False``: then the teacher's ranking
    alone decides), then the teacher's top ``round(top_fraction * group_size)``, then a uniform sample of the
    remaining candidates. ``group_size=None`` keeps every candidate (evaluation).

    **Reproducible sampling.** With an int ``seed`` and a group ``key`` (its index in the training set), the
    sample is drawn from a generator seeded by ``(seed, epoch, key)``: it depends on nothing that ran before, so
    a run resumed from any checkpoint (mid-epoch included, whatever the Trainer and accelerate collate ahead)
    and every DDP rank draw what the uninterrupted run draws. The trainer sets ``epoch`` at each epoch start.
    Without a key the sampler draws from its own generator (``seed``), or from Python's global ``random``
    state when ``seed`` is None.
    """

    group_size: int | None = None
    top_fraction: float = 0.5
    seed: int | None = None
    epoch: int = 0
    keep_labelled_positives: bool = True
    _rng: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.group_size is not None and self.group_size < 1:
            raise ValueError(f"group_size must be >= 1 or None, got {self.group_size}")
        if not 0.0 <= self.top_fraction <= 1.0:
            raise ValueError(f"top_fraction must be in [0, 1], got {self.top_fraction}")
        self._rng = random.Random(self.seed) if self.seed is not None else random  # module: global state

    def _generator(self, key: int | None) -> Any:
        if key is None or self.seed is None:
            return self._rng
        # A str seed is hashed with SHA-512 by random.seed: the same stream in every process and Python run.
        return random.Random(f"{self.seed}/{self.epoch}/{key}")

    def select(self, scores: Sequence[float], labels: Sequence[int], key: int | None = None) -> list[int]:
        """Indices of the kept candidates, in their original order; ``key`` identifies the group (see above)."""
        n = len(scores)
        if self.group_size is None or n <= self.group_size:
            return list(range(n))
        positives = [i for i in range(n) if labels and labels[i] == 1] if self.keep_labelled_positives else []
        kept: list[int] = positives[: self.group_size]
        chosen = set(kept)
        by_teacher = sorted((i for i in range(n) if i not in chosen), key=lambda i: -scores[i])
        num_top = min(round(self.top_fraction * self.group_size), self.group_size - len(kept))
        for i in by_teacher[: max(num_top, 0)]:
            kept.append(i)
            chosen.add(i)
        rest = [i for i in by_teacher if i not in chosen]
        kept.extend(self._generator(key).sample(rest, self.group_size - len(kept)))
        return sorted(kept)


def _pad(encodings: list[dict[str, list[int]]], pad_token_id: int, padding_side: str) -> dict[str, torch.Tensor]:
    """Pad a list of un-padded encodings to their longest one."""
    longest = max(len(e["input_ids"]) for e in encodings)
    batch: dict[str, torch.Tensor] = {}
    for key in encodings[0]:
        pad_value = pad_token_id if key == "input_ids" else 0
        rows = []
        for e in encodings:
            values = e[key]
            padding = [pad_value] * (longest - len(values))
            rows.append(padding + values if padding_side == "left" else values + padding)
        batch[key] = torch.tensor(rows, dtype=torch.long)
    return batch


def split_by_length(lengths: Sequence[int], max_tokens: int, overhead_tokens: int = 32) -> list[list[int]]:
    """Cut items into micro-batches with the least padding, each padded size ``rows * longest`` <= ``max_tokens``.

    Items are sorted by length; the cut points minimise ``sum(padded tokens) + overhead_tokens * chunks`` exactly
    (dynamic programming over the sorted order, O(P * chunk rows)). ``overhead_tokens`` prices one extra forward
    in tokens: 0 gives zero padding with one forward per distinct length, a large value gives few big chunks.
    An item longer than ``max_tokens`` gets a chunk of its own. Returns lists of item positions.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    sorted_lengths = [lengths[i] for i in order]
    count = len(order)
    best = [0.0] + [float("inf")] * count  # best[j]: cost of cutting the first j items
    cut = [0] * (count + 1)
    for end in range(1, count + 1):
        longest = sorted_lengths[end - 1]
        start = end - 1
        while start >= 0 and (end - start) * longest <= max(max_tokens, longest):
            cost = best[start] + (end - start) * longest + overhead_tokens
            if cost <= best[end]:  # ties: prefer the larger chunk
                best[end], cut[end] = cost, start
            start -= 1
    chunks: list[list[int]] = []
    end = count
    while end > 0:
        chunks.append(order[cut[end] : end])
        end = cut[end]
    return chunks[::-1]


class RankingCollator:
    """Shared plumbing: candidate sampling, teacher/label/mask matrices, dedup, length-sorted micro-batches."""

    padding_side: str | None = None  # None: the tokenizer's

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        max_length: int = 512,
        group_size: int | None = None,
        top_fraction: float = 0.5,
        micro_batch_max_tokens: int = 16384,
        micro_batch_overhead_tokens: int = 32,
        seed: int | None = None,
        keep_labelled_positives: bool = True,
    ) -> None:
        if tokenizer.pad_token_id is None:
            raise ValueError(
                f"tokenizer {type(tokenizer).__name__} has no pad token. "
                "Fix: set tokenizer.pad_token = tokenizer.eos_token (decoder models) before building the collator."
            )
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.sampler = CandidateSampler(
            group_size=group_size, top_fraction=top_fraction, seed=seed, keep_labelled_positives=keep_labelled_positives
        )
        self.micro_batch_max_tokens = micro_batch_max_tokens
        self.micro_batch_overhead_tokens = micro_batch_overhead_tokens

    # -- hooks for subclasses -------------------------------------------------------------------------------------
    def _item_keys(self, query: str, passages: list[str]) -> tuple[Any, list[Any]]:
        raise NotImplementedError

    def _tokenize(self, items: list[Any]) -> list[dict[str, list[int]]]:
        raise NotImplementedError

    def _index_outputs(self, query_slots: list[int], slot_index: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        """The epoch that is starting: candidate samples are drawn from (seed, epoch, group index)."""
        self.sampler.epoch = epoch

    # -- the flattening ---------------------------------------------------------------------------------------------
    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        selected = []
        for row in rows:
            # A labels-only group (an eval set without teacher scores) gets NaN teacher scores.
            scores = list(row["scores"]) if row.get("scores") is not None else [math.nan] * len(row["passages"])
            labels = list(row.get("labels") or [-1] * len(scores))
            keep = self.sampler.select(scores, labels, row.get(GROUP_INDEX_COLUMN))
            selected.append(
                (row["query"], [row["passages"][i] for i in keep], [scores[i] for i in keep], [labels[i] for i in keep])
            )
        batch_size = len(selected)
        width = max(len(passages) for _, passages, _, _ in selected)
        teacher_scores = torch.zeros(batch_size, width, dtype=torch.float32)
        candidate_mask = torch.zeros(batch_size, width, dtype=torch.bool)
        relevance_labels = torch.full((batch_size, width), -1, dtype=torch.long)
        slot_index = torch.full((batch_size, width), -1, dtype=torch.long)

        item_position: dict[Any, int] = {}
        items: list[Any] = []

        def position(key: Any) -> int:
            if key not in item_position:
                item_position[key] = len(items)
                items.append(key)
            return item_position[key]

        query_slots = []
        for b, (query, passages, scores, labels) in enumerate(selected):
            query_key, passage_keys = self._item_keys(query, passages)
            query_slots.append(position(query_key) if query_key is not None else -1)
            n = len(passages)
            teacher_scores[b, :n] = torch.tensor(scores, dtype=torch.float32)
            candidate_mask[b, :n] = True
            relevance_labels[b, :n] = torch.tensor(labels, dtype=torch.long)
            slot_index[b, :n] = torch.tensor([position(k) for k in passage_keys], dtype=torch.long)

        encodings = self._tokenize(items)
        lengths = [len(e["input_ids"]) for e in encodings]
        chunks = split_by_length(lengths, self.micro_batch_max_tokens, self.micro_batch_overhead_tokens)
        new_position = torch.empty(len(items), dtype=torch.long)
        micro_batches = []
        cursor = 0
        padded_tokens = 0
        for chunk in chunks:
            padding_side = self.padding_side or self.tokenizer.padding_side
            micro_batches.append(_pad([encodings[i] for i in chunk], self.tokenizer.pad_token_id, padding_side))
            padded_tokens += len(chunk) * max(lengths[i] for i in chunk)
            for i in chunk:
                new_position[i] = cursor
                cursor += 1

        def remap(index: torch.Tensor) -> torch.Tensor:
            return torch.where(index >= 0, new_position[index.clamp(min=0)], index)

        batch: dict[str, Any] = {
            "teacher_scores": teacher_scores,  # first tensor: Trainer's find_batch_size reads B from it
            "candidate_mask": candidate_mask,
            "relevance_labels": relevance_labels,
            "micro_batches": micro_batches,
        }
        batch.update(self._index_outputs([int(x) for x in remap(torch.tensor(query_slots))], remap(slot_index)))
        batch["num_real_tokens"] = torch.tensor(sum(lengths))
        batch["num_padded_tokens"] = torch.tensor(padded_tokens)
        return batch


class CrossEncoderCollator(RankingCollator):
    """Collate groups for a pair-scoring student (cross-encoder or causal-LM yes/no).

    Args:
        tokenizer: the student's tokenizer.
        max_length: truncation length of a (query, passage) pair, in tokens.
        group_size: candidates kept per group per step (``None``: all).
        top_fraction: share of ``group_size`` filled with the teacher's top-ranked candidates.
        micro_batch_max_tokens: padded tokens per forward. It bounds one forward, not the step: without the
            trainer's ``gradient_cache`` every micro-batch's activations live until the backward.
        micro_batch_overhead_tokens: the cost of one more forward, in tokens, when choosing the cut points
            (see :func:`split_by_length`); raise it on GPUs where a forward has a high fixed cost.
        pair_encoder: optional callable ``(queries, passages) -> list[dict[str, list[int]]]`` that replaces the
            tokenizer's own pair encoding (a prompt template, e.g. Qwen3-Reranker's).

    Example::

        collator = CrossEncoderCollator(tokenizer, max_length=256, group_size=16)
        batch = collator([{"query": "q", "passages": ["a", "b"], "scores": [2.0, -1.0], "labels": [1, 0]}])
        batch["pair_index"]  # tensor([[0, 1]]) or [[1, 0]], depending on token lengths
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        *args: Any,
        pair_encoder: Callable[[list[str], list[str]], list[dict[str, list[int]]]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(tokenizer, *args, **kwargs)
        self.pair_encoder = pair_encoder

    def _item_keys(self, query: str, passages: list[str]) -> tuple[Any, list[Any]]:
        return None, [(query, passage) for passage in passages]

    def _tokenize(self, items: list[tuple[str, str]]) -> list[dict[str, list[int]]]:
        queries = [q for q, _ in items]
        passages = [p for _, p in items]
        if self.pair_encoder is not None:
            return self.pair_encoder(queries, passages)
        encoded = self.tokenizer(queries, passages, truncation=True, max_length=self.max_length)
        return [{key: encoded[key][i] for key in encoded.keys()} for i in range(len(items))]

    def _index_outputs(self, query_slots: list[int], slot_index: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"pair_index": slot_index}


class BiEncoderCollator(RankingCollator):
    """Collate groups for a bi-encoder student: every unique text (query or passage) is encoded once.

    Args:
        query_prefix / passage_prefix: prepended to queries / passages before tokenization (e.g. the
            Qwen3-Embedding instruction ``"Instruct: {task}\\nQuery:"``, or E5's ``"query: "``).
        Other arguments as :class:`CrossEncoderCollator`; ``max_length`` applies to each text.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        *args: Any,
        query_prefix: str = "",
        passage_prefix: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(tokenizer, *args, **kwargs)
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix

    def _item_keys(self, query: str, passages: list[str]) -> tuple[Any, list[Any]]:
        # The key is the text the encoder sees: a passage equal to a (prefixed) query is encoded once.
        return self.query_prefix + query, [self.passage_prefix + p for p in passages]

    def _tokenize(self, items: list[str]) -> list[dict[str, list[int]]]:
        encoded = self.tokenizer(items, truncation=True, max_length=self.max_length)
        return [{key: encoded[key][i] for key in encoded.keys()} for i in range(len(items))]

    def _index_outputs(self, query_slots: list[int], slot_index: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"query_index": torch.tensor(query_slots, dtype=torch.long), "passage_index": slot_index}


class Qwen3RerankerCollator(CrossEncoderCollator):
    """Collate groups for a causal-LM yes/no student: each unique pair becomes a Qwen3-Reranker prompt.

    Prompts are built by :class:`hf_distill.prompts.Qwen3RerankerPrompt`, the code the Qwen3-Reranker teacher
    uses, so student and teacher read the same token ids: ``prefix + instruction/query/document + suffix``, only
    the document's tail cut to fit ``max_length``. Micro-batches are padded on the left (the last column is every
    prompt's answer slot) and carry ``position_ids`` that count real tokens only, as the teacher's do.

    Args:
        instruction: the ``<Instruct>`` line; the model card's web-search task when ``None``. Use the teacher's.
        Other arguments as :class:`CrossEncoderCollator`; ``max_length`` bounds the whole prompt.
    """

    padding_side = "left"

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, *args: Any, instruction: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(tokenizer, *args, pair_encoder=self._encode_prompts, **kwargs)
        self.prompt = Qwen3RerankerPrompt(tokenizer, instruction, max_length=self.max_length)

    def _encode_prompts(self, queries: list[str], passages: list[str]) -> list[dict[str, list[int]]]:
        encoded = self.prompt.encode(list(zip(queries, passages)))
        # Left padding adds position 0 in front of these, as Qwen3RerankerPrompt.pad's clamped cumsum does.
        return [
            {"input_ids": ids, "attention_mask": [1] * len(ids), "position_ids": list(range(len(ids)))}
            for ids in encoded
        ]
