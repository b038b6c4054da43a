"""Running a teacher over ranking groups: once per unique item, in length-sorted token-budget batches, spread
over processes, resumable after a kill.

**Work.** The groups are flattened into unique items in first-seen order (:func:`build_work`): unique
``(query, passage)`` pairs for pair teachers, unique model input texts for text teachers (a query that recurs in
many groups, or a passage shared by many queries, is embedded once). The input is streamed (a
:class:`hf_distill.data.RankingSource` is read once to plan and once to write), items are told apart by a 128-bit
hash and deduplicated by sorting, their texts wait on disk in the work dir (``items.bin``) and an embedding
teacher's vectors are read in place from the record files: memory holds a few dozen bytes per candidate, not its
text.

**Batches.** Items are sorted by token length, longest first (ties by item index), and cut greedily into
batches whose *padded* size ``len(batch) * longest`` stays within ``max_tokens_per_batch``
(:func:`plan_batches`). Sorting makes padding nearly free and the longest batch comes first, so an
out-of-memory error shows in the first second, not after hours.

**Data parallel.** Every process computes the same plan and takes batches ``rank, rank + W, rank + 2W, ...``.
Because the plan does not depend on ``W``, every item is scored in the same batch, with the same shapes, by 1 or
by 8 processes, and the output is the same.

**Resume.** Results are appended, batch by batch, to ``<output_file>.partial/scores.rank{r}.bin`` as fixed-size
records ``(item index: int64, values: float32[dim], crc32: uint32)``. A kill (SIGKILL included) can at worst
leave a torn last record, which the size and the CRC reveal; it is dropped and its batch is scored again.
``manifest.json`` holds a fingerprint of the input groups, the teacher and every option that changes a score; a
rerun with anything different is refused with what changed (:class:`ResumeMismatchError`). Rank 0 waits for
all items, combines them into scores, writes ``output_file`` atomically, and removes the work dir. With several
nodes, the work dir must be on a shared file system.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import time
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from hf_distill.data import RankingGroup, write_listwise_jsonl
from hf_distill.errors import ConfigError, HfDistillError, NonFiniteScoreError, ResumeMismatchError
from hf_distill.teachers.models import Teacher

logger = logging.getLogger("hf_distill")

DEFAULT_MAX_TOKENS_PER_BATCH = 16384
MANIFEST_VERSION = 1


# ---------------------------------------------------------------------------------------------------------
# Work and batches
# ---------------------------------------------------------------------------------------------------------


ITEM_KEY_BYTES = 16  # blake2b-128 of an item's bytes: a collision among 10^12 items has odds of about 10^-15


def encode_item(unit: str, item: Any) -> bytes:
    """The bytes an item is stored and keyed by: UTF-8 JSON ``[query, passage]`` for a pair, UTF-8 for a text."""
    return json.dumps(item, ensure_ascii=False).encode("utf-8") if unit == "pair" else item.encode("utf-8")


def decode_item(unit: str, raw: bytes) -> Any:
    if unit == "pair":
        query, passage = json.loads(raw)
        return query, passage
    return raw.decode("utf-8")


class _PreadFile:
    """A file read at offsets with ``pread``, opened on first read. ``pread`` and not ``mmap``: pages read through a
    map count in the process's resident memory until the kernel takes them back, pages read with ``pread`` live in
    the page cache only. Safe to read from several threads."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd: int | None = None

    def _read(self, size: int, offset: int) -> bytes:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        return os.pread(self._fd, size, offset)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class ItemFile(_PreadFile, Sequence):
    """The unique items of a run, on disk: ``items[k]`` reads item ``k``'s bytes at ``spans[k]``.

    The file holds every occurrence in input order (a duplicate is written again, and simply never read); only the
    spans (two ``int64`` per unique item) are in memory.
    """

    def __init__(self, path: Path, spans: np.ndarray, unit: str):
        super().__init__(path)
        self.spans, self.unit = spans, unit

    def __len__(self) -> int:
        return len(self.spans)

    def __getitem__(self, index: int) -> Any:  # type: ignore[override]
        start, end = self.spans[index]
        return decode_item(self.unit, self._read(int(end - start), int(start)))


class TokenFile(_PreadFile, Sequence):
    """Every unique item's token ids (``int32``) in one file, ``ends[k]`` tokens after the start of item 0's:
    written once by the length pass, read back per batch."""

    def __init__(self, path: Path, ends: np.ndarray):
        super().__init__(path)
        self.ends = ends

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, index: int) -> list[int]:  # type: ignore[override]
        start = int(self.ends[index - 1]) if index else 0
        return np.frombuffer(self._read(4 * (int(self.ends[index]) - start), 4 * start), dtype="<i4").tolist()


@dataclass
class ScoringWork:
    """Unique items, and for every candidate of every group (in input order) which item it is.

    ``item_of`` lists, group after group, the item of each candidate (pair teachers), or the query's item and then
    each candidate's (text teachers). ``query_ids[k]`` is the first-seen index of item ``k``'s query (pair items;
    for query-grouped plans). ``item_of`` and ``group_sizes`` are ``None`` where only the scoring share is needed
    (ranks other than 0).
    """

    unit: str
    items: Sequence[Any]
    item_of: np.ndarray | None
    group_sizes: np.ndarray | None
    query_ids: np.ndarray | None = None
    groups_sha256: str = ""
    tokens: TokenFile | None = None  # the items' token ids, when the teacher prepares batches from them

    @property
    def num_groups(self) -> int:
        return len(self.group_sizes) if self.group_sizes is not None else 0

    @property
    def num_pairs(self) -> int:
        return int(self.group_sizes.sum()) if self.group_sizes is not None else 0


def first_seen_ids(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Number equal keys in first-seen order: ``(ids, firsts)`` with ``ids[i]`` the number of ``keys[i]`` and
    ``firsts[k]`` where number ``k`` first appears. Sorting, not a dict: ~40 bytes a key at the peak, not ~150."""
    if len(keys) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    number = np.empty(len(order), dtype=np.int64)
    number[order] = np.arange(len(order))
    ids = number[inverse.ravel()]
    dtype = np.int32 if len(order) < 2**31 else np.int64
    return ids.astype(dtype), first[order]


def _group_digest_line(group: RankingGroup) -> bytes:
    return json.dumps([group.query, group.passages], ensure_ascii=False).encode("utf-8") + b"\n"


def build_work(
    teacher: Teacher, groups: Iterable[RankingGroup], items_path: str | os.PathLike | None = None
) -> ScoringWork:
    """One pass over ``groups``: the unique items in first-seen order, where each candidate's item is, and the
    input's sha256 (:func:`groups_fingerprint`).

    With ``items_path`` the items go to that file (:class:`ItemFile`) and memory holds ~30 bytes per candidate,
    whatever the texts' length; without it they are kept in a list. Items are told apart by a 128-bit hash of
    their bytes (:data:`ITEM_KEY_BYTES`), deduplicated by sorting.
    """
    unit = teacher.unit
    digest = hashlib.sha256()
    keys = bytearray()  # ITEM_KEY_BYTES per occurrence
    query_keys = bytearray()  # per group (pair teachers: for query-grouped plans)
    sizes = array("q")
    ends = array("q")  # byte offset after each occurrence in the items file
    in_memory: list[Any] = []
    sink = open(items_path, "wb") if items_path is not None else None
    written = 0

    def add(item: Any) -> None:
        nonlocal written
        raw = encode_item(unit, item)
        keys.extend(hashlib.blake2b(raw, digest_size=ITEM_KEY_BYTES).digest())
        if sink is None:
            in_memory.append(item)
        else:
            sink.write(raw)
            written += len(raw)
            ends.append(written)

    try:
        for group in groups:
            digest.update(_group_digest_line(group))
            sizes.append(len(group.passages))
            if unit == "pair":
                query_keys.extend(hashlib.blake2b(group.query.encode("utf-8"), digest_size=ITEM_KEY_BYTES).digest())
                for passage in group.passages:
                    add((group.query, passage))
            else:
                add(teacher.query_text(group.query))
                for passage in group.passages:
                    add(teacher.passage_text(passage))
    finally:
        if sink is not None:
            sink.close()
    key_view = np.frombuffer(keys, dtype=f"V{ITEM_KEY_BYTES}")  # no copy
    item_of, firsts = first_seen_ids(key_view)
    del key_view
    keys.clear()
    group_sizes = np.frombuffer(sizes, dtype=np.int64).astype(np.int32)
    query_ids = None
    if unit == "pair":
        group_query, _ = first_seen_ids(np.frombuffer(query_keys, dtype=f"V{ITEM_KEY_BYTES}"))
        group_of_occurrence = np.repeat(np.arange(len(group_sizes), dtype=np.int32), group_sizes)
        query_ids = group_query[group_of_occurrence[firsts]].astype(np.int64)
        del group_of_occurrence
    if sink is None:
        items: Sequence[Any] = [in_memory[f] for f in firsts]
    else:
        stops = np.frombuffer(ends, dtype=np.int64)
        starts = np.concatenate([[0], stops[:-1]]) if len(stops) else stops
        items = ItemFile(Path(items_path), np.stack([starts[firsts], stops[firsts]], axis=1), unit)
    return ScoringWork(unit, items, item_of, group_sizes, query_ids, digest.hexdigest())


def plan_batches(lengths: Sequence[int] | np.ndarray, max_tokens_per_batch: int) -> list[np.ndarray]:
    """Cut items into batches of at most ``max_tokens_per_batch`` padded tokens, longest first.

    An item longer than the budget gets a batch of its own (it cannot be split).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.lexsort((np.arange(len(lengths)), -lengths))  # by length descending, then by index
    batches = []
    start = 0
    while start < len(order):
        longest = max(int(lengths[order[start]]), 1)
        size = max(1, max_tokens_per_batch // longest)
        batches.append(order[start : start + size])
        start += size
    return batches


def plan_query_batches(
    lengths: Sequence[int] | np.ndarray, query_ids: Sequence[int] | np.ndarray, max_tokens_per_batch: int
) -> list[np.ndarray]:
    """Like :func:`plan_batches`, but a query's items stay together: for teachers that share work across a query's
    candidates (a decoder reranker's prompt prefix, vLLM's prefix cache).

    Items are ordered by query, queries by their longest item (longest first, ties by query id), and within a query
    longest first (ties by item index); batches are cut greedily so that ``len(batch) * longest`` stays within
    the budget, as in :func:`plan_batches`. A query with more items than fit in one batch continues in the next.
    Like :func:`plan_batches`, the plan depends on the lengths alone, never on the number of processes.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    query_ids = np.asarray(query_ids, dtype=np.int64)
    if len(lengths) == 0:
        return []
    longest_of_query = np.zeros(int(query_ids.max()) + 1, dtype=np.int64)
    np.maximum.at(longest_of_query, query_ids, lengths)
    # lexsort: the last key is the primary one.
    order = np.lexsort((np.arange(len(lengths)), -lengths, query_ids, -longest_of_query[query_ids]))
    batches = []
    start = 0
    while start < len(order):
        longest = max(int(lengths[order[start]]), 1)
        end = start + 1
        while end < len(order):
            candidate = max(longest, int(lengths[order[end]]))
            if (end - start + 1) * candidate > max_tokens_per_batch:
                break
            longest = candidate
            end += 1
        batches.append(order[start:end])
        start = end
    return batches


def plan_for(teacher: Teacher, work: ScoringWork, lengths: np.ndarray, max_tokens_per_batch: int) -> list[np.ndarray]:
    """The teacher's batch plan: query-grouped for a teacher with ``batches_by_query``, length-sorted otherwise."""
    if getattr(teacher, "batches_by_query", False) and work.query_ids is not None:
        return plan_query_batches(lengths, work.query_ids, max_tokens_per_batch)
    return plan_batches(lengths, max_tokens_per_batch)


LENGTH_CHUNK = 8192


def item_lengths(teacher: Teacher, items: Sequence[Any], chunk: int | None = None) -> np.ndarray:
    """Token length of every item (``int32``), tokenized ``chunk`` items at a time.

    One tokenizer call over every item would hold all token ids at once (about 220 bytes per token with a fast
    tokenizer: 220 GB for 10^9 tokens); in chunks the peak is that of one chunk, whatever the data size.
    """
    chunk = chunk or LENGTH_CHUNK
    lengths = np.empty(len(items), dtype=np.int32)
    for start in range(0, len(items), chunk):
        stop = min(start + chunk, len(items))
        lengths[start:stop] = teacher.lengths([items[i] for i in range(start, stop)])
    return lengths


def encode_items(
    teacher: Teacher, items: Sequence[Any], path: Path, chunk: int | None = None
) -> tuple[np.ndarray, TokenFile | None]:
    """Token length of every item and, when the teacher's input is its ids alone (:meth:`Teacher.encode`), the
    ids themselves in a :class:`TokenFile` at ``path``: tokenized once, ``chunk`` items at a time."""
    chunk = chunk or LENGTH_CHUNK
    first = teacher.encode([items[i] for i in range(min(1, len(items)))])
    if first is None:
        return item_lengths(teacher, items, chunk), None
    lengths = np.empty(len(items), dtype=np.int32)
    with open(path, "wb") as sink:
        for start in range(0, len(items), chunk):
            stop = min(start + chunk, len(items))
            ids = teacher.encode([items[i] for i in range(start, stop)])
            lengths[start:stop] = [len(row) for row in ids]
            for row in ids:
                sink.write(np.asarray(row, dtype="<i4").tobytes())
    return lengths, TokenFile(path, np.cumsum(lengths, dtype=np.int64))


def prepared_batches(
    teacher: Teacher,
    items: Sequence[Any],
    batches: Sequence[np.ndarray],
    tokens: TokenFile | None = None,
    query_ids: np.ndarray | None = None,
) -> Iterator[tuple[np.ndarray, Any]]:
    """``(batch, model inputs)`` in order, the inputs of batch ``k + 1`` prepared on a thread while the caller runs
    batch ``k``: tokenizing, padding and pinning (:meth:`Teacher.prepare_batch`) overlap the forward, so the
    accelerator does not wait for the CPU between batches. With ``tokens`` the inputs are built from the stored
    ids (:meth:`Teacher.prepare_encoded`), nothing is tokenized again."""
    if not batches:
        return

    def prepare(batch: np.ndarray) -> Any:
        if tokens is None:
            return teacher.prepare_batch([items[i] for i in batch])
        return teacher.prepare_encoded(
            [tokens[i] for i in batch], None if query_ids is None else query_ids[batch].tolist()
        )

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="hf_distill-prepare") as pool:
        pending = pool.submit(prepare, batches[0])
        for k, batch in enumerate(batches):
            prepared = pending.result()
            if k + 1 < len(batches):
                pending = pool.submit(prepare, batches[k + 1])
            yield batch, prepared


def scored_batches(
    teacher: Teacher,
    items: Sequence[Any],
    batches: Sequence[np.ndarray],
    tokens: TokenFile | None = None,
    query_ids: np.ndarray | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(batch, values)`` in order. With :attr:`Teacher.results_ahead` (a GPU), batch ``k + 1``'s forward is
    launched before batch ``k``'s values are waited for, so copying them back, checking and writing them run
    while the accelerator works; on a CPU each batch is finished before the next starts."""
    ahead = teacher.results_ahead
    previous: tuple[np.ndarray, Any] | None = None
    for batch, prepared in prepared_batches(teacher, items, batches, tokens, query_ids):
        pending = teacher.start_batch(prepared)
        if not ahead:
            yield batch, pending.result()
            continue
        if previous is not None:
            yield previous[0], previous[1].result()
        previous = (batch, pending)
    if previous is not None:
        yield previous[0], previous[1].result()


def check_finite(values: np.ndarray, batch: np.ndarray, work: ScoringWork, teacher: Teacher) -> None:
    """Stop at the first batch with a NaN or infinite value, naming the item and what to do."""
    finite = np.isfinite(values).all(axis=1)
    if finite.all():
        return
    row = int(np.argmin(finite))
    item = work.items[int(batch[row])]
    shown = f"query {item[0][:80]!r} and passage {item[1][:80]!r}" if work.unit == "pair" else f"text {item[:80]!r}"
    dtype = str(getattr(teacher, "torch_dtype", "")).replace("torch.", "") or getattr(teacher, "dtype_name", "?")
    raise NonFiniteScoreError(
        f"the teacher gave a non-finite value ({values[row].ravel()[:4].tolist()}) for {shown} (item "
        f"{int(batch[row])}, one of {int((~finite).sum())} in its batch of {len(batch)}), in {dtype}. Nothing "
        "non-finite was written; the results scored so far are kept. Fix: float16 overflows on long prompts: rerun "
        "with --dtype bfloat16 (or float32) and --overwrite_partial (a resume in another dtype would mix two "
        "numerics); if it happens in float32 too, the checkpoint itself is broken."
    )


def combine(work: ScoringWork, values: Any, groups: Iterable[RankingGroup]) -> Iterator[RankingGroup]:
    """``groups`` again, with their scores: a pair's value, or the cosine of two normalised embeddings.

    ``values[indices]`` gives the items' values (a numpy array, or :class:`RecordValues`). ``groups`` must be the
    input that ``work`` was built from, read again (checked group by group).
    """
    position = 0
    count = -1
    for count, group in enumerate(groups):
        if count >= work.num_groups or len(group.passages) != int(work.group_sizes[count]):
            raise HfDistillError(
                f"the input changed while it was being scored (group {count} differs from the first read). Fix: "
                "do not modify the input file while score_teacher runs; rerun with --overwrite_partial."
            )
        size = len(group.passages)
        if work.unit == "pair":
            scores = values[work.item_of[position : position + size]][:, 0]
            position += size
        else:
            query = int(work.item_of[position])
            passages = work.item_of[position + 1 : position + 1 + size]
            scores = values[passages] @ values[np.array([query])][0]  # float32, deterministic for fixed inputs
            position += size + 1
        yield RankingGroup(group.query, list(group.passages), scores.tolist(), group.labels)
    if count + 1 != work.num_groups:
        raise HfDistillError(
            f"the input changed while it was being scored ({count + 1} groups on the second read, "
            f"{work.num_groups} on the first). Fix: do not modify the input file while score_teacher runs."
        )


def _progress(total: int, unit: str, enabled: bool, desc: str) -> tqdm:
    return tqdm(total=total, unit=unit, desc=desc, disable=not enabled, dynamic_ncols=True, smoothing=0.1)


def score_groups(
    teacher: Teacher,
    groups: Iterable[RankingGroup],
    max_tokens_per_batch: int = DEFAULT_MAX_TOKENS_PER_BATCH,
    progress: bool = True,
) -> list[list[float]]:
    """Score groups in memory, in one process, with nothing written: a list of raw fp32 scores per group.

    ``groups`` is read twice (a list, or a re-iterable such as :class:`hf_distill.data.RankingSource`).
    """
    require_reiterable(groups)
    work = build_work(teacher, groups)
    lengths = item_lengths(teacher, work.items)
    values = np.zeros((len(work.items), teacher.output_dim), dtype=np.float32)
    batches = plan_for(teacher, work, lengths, max_tokens_per_batch)
    with _progress(len(work.items), teacher.unit, progress, "teacher scoring") as bar:
        for batch, batch_values in scored_batches(teacher, work.items, batches):
            check_finite(batch_values, batch, work, teacher)
            values[batch] = batch_values
            bar.update(len(batch))
    return [group.scores for group in combine(work, values, groups)]


# ---------------------------------------------------------------------------------------------------------
# Record files: append-only, fixed-size, checksummed
# ---------------------------------------------------------------------------------------------------------


def record_dtype(dim: int) -> np.dtype:
    return np.dtype([("index", "<i8"), ("values", "<f4", (dim,)), ("crc", "<u4")])


def encode_records(indices: np.ndarray, values: np.ndarray) -> bytes:
    records = np.zeros(len(indices), dtype=record_dtype(values.shape[1]))
    records["index"] = indices
    records["values"] = values
    raw = bytearray(records.tobytes())
    size = records.dtype.itemsize
    for row in range(len(records)):
        start = row * size
        crc = zlib.crc32(raw[start : start + size - 4])
        raw[start + size - 4 : start + size] = crc.to_bytes(4, "little")
    return bytes(raw)


class RecordValues:
    """Items' values read in place from the record files, by where each item's valid record lies: two arrays
    (file number, byte offset: 10 bytes an item) instead of the values. An embedding teacher's vectors (4 KB each
    for a 1024-dim model, 4 GB for a million texts) are neither held in memory nor copied on disk."""

    def __init__(self, num_items: int, dim: int):
        self.dim = dim
        self.file = np.full(num_items, -1, dtype=np.int16)
        self.offset = np.zeros(num_items, dtype=np.int64)
        self.paths: list[Path] = []
        self._fds: dict[int, int] = {}

    def file_number(self, path: Path) -> int:
        if path not in self.paths:
            self.paths.append(path)
        return self.paths.index(path)

    def __getitem__(self, indices: np.ndarray) -> np.ndarray:
        out = np.empty((len(indices), self.dim), dtype=np.float32)
        for row, index in enumerate(np.asarray(indices).tolist()):
            number = int(self.file[index])
            if number not in self._fds:
                self._fds[number] = os.open(self.paths[number], os.O_RDONLY)
            raw = os.pread(self._fds[number], 4 * self.dim, int(self.offset[index]) + 8)  # after the int64 index
            out[row] = np.frombuffer(raw, dtype="<f4")
        return out

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


class RecordStore:
    """Reads every ``scores.rank*.bin`` of a work dir, incrementally, keeping which items are done.

    Only whole records with a valid CRC count; a torn or corrupt record is skipped (its item is scored again).
    With ``keep_values`` their values are kept in memory (``values``, an array); with ``in_place`` only where
    they are (:class:`RecordValues`, for embeddings, whose vectors would not fit in memory at scale).
    """

    READ_BYTES = 8 << 20  # records are read 8 MB at a time: the peak does not grow with the number of items

    def __init__(self, work_dir: Path, num_items: int, dim: int, keep_values: bool = False, in_place: bool = False):
        self.work_dir = work_dir
        self.dtype = record_dtype(dim)
        self.done = np.zeros(num_items, dtype=bool)
        self.values: Any = None
        if keep_values:
            self.values = RecordValues(num_items, dim) if in_place else np.zeros((num_items, dim), dtype=np.float32)
        self.offsets: dict[str, int] = {}

    def refresh(self) -> int:
        """Read records written since the last call; returns the number of items done."""
        size = self.dtype.itemsize
        chunk = max(1, self.READ_BYTES // size) * size
        for path in sorted(self.work_dir.glob("scores.rank*.bin")):
            with open(path, "rb") as f:
                f.seek(self.offsets.get(path.name, 0))
                while True:
                    start = self.offsets.get(path.name, 0)
                    raw = f.read(chunk)
                    whole = len(raw) // size * size  # a torn last record waits for the next call (or a rerun)
                    if whole:
                        self._add(raw[:whole], path, start)
                        self.offsets[path.name] = start + whole
                    if len(raw) < chunk:
                        break
        return int(self.done.sum())

    def _add(self, raw: bytes, path: Path, start: int) -> None:
        size = self.dtype.itemsize
        records = np.frombuffer(raw, dtype=self.dtype)
        valid = np.fromiter(
            (zlib.crc32(raw[r * size : (r + 1) * size - 4]) == int(records["crc"][r]) for r in range(len(records))),
            dtype=bool,
            count=len(records),
        )
        indices = records["index"]
        valid &= (indices >= 0) & (indices < len(self.done))
        self.done[indices[valid]] = True
        if isinstance(self.values, RecordValues):
            self.values.file[indices[valid]] = self.values.file_number(path)
            self.values.offset[indices[valid]] = start + size * np.flatnonzero(valid)
        elif self.values is not None:
            self.values[indices[valid]] = records["values"][valid]


def _open_own_record_file(path: Path, record_size: int):
    """Open this rank's record file for appending, first cutting a torn last record left by a kill."""
    f = open(path, "ab")
    size = f.tell()
    if size % record_size:
        f.truncate(size - size % record_size)
        f.seek(0, os.SEEK_END)
    return f


# ---------------------------------------------------------------------------------------------------------
# Fingerprints and the work dir
# ---------------------------------------------------------------------------------------------------------


def groups_fingerprint(groups: Iterable[RankingGroup]) -> dict[str, Any]:
    """sha256 of the queries and passages, in order (what the scores depend on; labels are copied, not scored),
    and the number of groups: the ``input`` part of a run's fingerprint. :func:`build_work` computes the same
    in its own pass."""
    digest = hashlib.sha256()
    count = 0
    for group in groups:
        digest.update(_group_digest_line(group))
        count += 1
    return {"groups_sha256": digest.hexdigest(), "num_groups": count}


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out.update(_flatten(sub, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def describe_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable differences between two fingerprints, e.g. ``teacher.max_length: 512 -> 256``."""
    before, after = _flatten(old), _flatten(new)
    changes = []
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            label = "input groups (queries/passages) sha256" if key == "input.groups_sha256" else key
            changes.append(f"{label}: {before.get(key, '<unset>')!r} -> {after.get(key, '<unset>')!r}")
    return changes


def partial_dir_for(output_file: str | os.PathLike) -> Path:
    return Path(f"{os.fspath(output_file)}.partial")


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _write_json_atomic(path: Path, obj: Any) -> None:
    _write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True))


def prepare_work_dir(
    work_dir: Path,
    fingerprint: dict[str, Any],
    teacher: Teacher,
    work: ScoringWork,
    overwrite: bool,
) -> np.ndarray:
    """Create, check or reset the work dir (rank 0 only) and put the run's items in it; returns the item lengths,
    cached in ``lengths.npy``.

    ``work.items`` is an :class:`ItemFile` written next to the work dir; it moves in as ``items.bin`` (with its
    spans and query ids, for the other ranks) and ``work.items`` then reads from there.
    """
    manifest_path = work_dir / "manifest.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        changes = describe_changes(manifest.get("fingerprint", {}), fingerprint)
        if changes and not overwrite:
            store = RecordStore(work_dir, fingerprint["num_items"], fingerprint["record_dim"])
            done = (
                store.refresh()
                if manifest.get("fingerprint", {}).get("record_dim") == fingerprint["record_dim"]
                else "some"
            )
            raise ResumeMismatchError(
                f"{work_dir} holds {done} results of an earlier run with other settings, and mixing them would "
                "give a file scored two ways. Changed: " + "; ".join(changes) + ". Fix: rerun with "
                f"--overwrite_partial to discard them and start over, delete {work_dir}, or rerun the earlier "
                "command to finish that run."
            )
        if overwrite:
            logger.warning("--overwrite_partial: discarding %s", work_dir)
            shutil.rmtree(work_dir)
    elif work_dir.exists():
        # No manifest means the earlier run died before writing any result: nothing to keep.
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    items = work.items
    if isinstance(items, ItemFile):
        items.close()
        # Same input, same bytes: on a resume this replaces the file with an identical one.
        os.replace(items.path, work_dir / "items.bin")
        work.items = ItemFile(work_dir / "items.bin", items.spans, items.unit)
        _save_array_atomic(work_dir / "items.spans.npy", items.spans)
        if work.query_ids is not None:
            _save_array_atomic(work_dir / "query_ids.npy", work.query_ids)
    lengths_path = work_dir / "lengths.npy"
    if manifest_path.exists() and lengths_path.exists():
        work.tokens = _load_tokens(work_dir)
        return np.load(lengths_path)
    logger.info("tokenizing %d unique %ss to plan batches", len(work.items), work.unit)
    lengths, work.tokens = encode_items(teacher, work.items, work_dir / "tokens.bin")
    if work.tokens is not None:
        _save_array_atomic(work_dir / "tokens.ends.npy", work.tokens.ends)
    _save_array_atomic(lengths_path, lengths)
    # The manifest is written last: its presence means the items, lengths and fingerprint are complete.
    _write_json_atomic(manifest_path, {"version": MANIFEST_VERSION, "fingerprint": fingerprint})
    return lengths


def _save_array_atomic(path: Path, array_: np.ndarray) -> None:
    tmp = path.with_name(f".{path.stem}.tmp.npy")
    np.save(tmp, array_)
    os.replace(tmp, path)


def _load_tokens(work_dir: Path) -> TokenFile | None:
    ends = work_dir / "tokens.ends.npy"
    return TokenFile(work_dir / "tokens.bin", np.load(ends)) if ends.exists() else None


def _load_shared_work(work_dir: Path, unit: str) -> ScoringWork:
    """What a rank other than 0 needs to score its share: the items (and token ids) rank 0 put in the work dir."""
    spans = np.load(work_dir / "items.spans.npy")
    query_path = work_dir / "query_ids.npy"
    query_ids = np.load(query_path) if query_path.exists() else None
    items = ItemFile(work_dir / "items.bin", spans, unit)
    return ScoringWork(unit, items, None, None, query_ids, tokens=_load_tokens(work_dir))


def _same_run(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Fingerprints equal in what a rank other than 0 computes (all but ``num_items``, which rank 0 counts)."""
    return {k: v for k, v in a.items() if k != "num_items"} == {k: v for k, v in b.items() if k != "num_items"}


def _all_ranks_agree(world_size: int, ok: Callable[[], bool]) -> bool:
    """Wait for every process (once, before scoring), then tell all of them whether ``ok()`` held on every one.

    A CPU gloo group, torn down right after, so the long wait at the end (ranks finishing at different times)
    never hits a collective timeout.
    """
    if world_size <= 1:
        return ok()
    import torch
    import torch.distributed as dist

    created = False
    if not dist.is_initialized():
        # Rank 0 may tokenize millions of items before it arrives: allow hours, not the default 30 minutes.
        dist.init_process_group(backend="gloo", timeout=timedelta(hours=6))
        created = True
    dist.barrier()
    flag = torch.tensor([1 if ok() else 0], dtype=torch.int64)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    if created:
        dist.destroy_process_group()
    return bool(flag.item())


def completion_file_for(output_file: str | os.PathLike) -> Path:
    """Where a finished run records what it scored: a rerun with the same fingerprint is already complete."""
    return Path(f"{os.fspath(output_file)}.scoring.json")


def _already_complete(output_file: Path, work_dir: Path, fingerprint: dict[str, Any]) -> bool:
    done = completion_file_for(output_file)
    if not output_file.exists() or not done.exists() or work_dir.exists():
        return False
    try:
        return _same_run(json.loads(done.read_text(encoding="utf-8")).get("fingerprint") or {}, fingerprint)
    except (OSError, ValueError):
        return False


def _marker(work_dir: Path, state: str, rank: int) -> Path:
    return work_dir / f"{state}.rank{rank}"


def _wait_for_ranks(
    work_dir: Path, world_size: int, store: RecordStore, num_items: int, unit: str, poll: float
) -> None:
    """Rank 0: wait until every rank has marked its share done; a rank that failed stops this one with its reason.

    Waiting on markers, not on item counts, cannot hang on a record that never reads as valid (a page another
    node's writer has not flushed yet, on NFS): whatever is missing once all are done is scored again by rank 0.
    """
    last_log = 0.0
    while True:
        failed = sorted(work_dir.glob("failed.rank*"))
        if failed:
            reason = failed[0].read_text(encoding="utf-8").strip()
            raise HfDistillError(f"{failed[0].name.split('.')[-1]} stopped: {reason}")
        if all(_marker(work_dir, "done", r).exists() for r in range(world_size)):
            return
        if time.monotonic() - last_log > 60:
            logger.info("waiting for the other processes: %d of %d %ss scored", store.refresh(), num_items, unit)
            last_log = time.monotonic()
        time.sleep(poll)


def _score_batches(
    teacher: Teacher,
    work: ScoringWork,
    batches: Sequence[np.ndarray],
    done: np.ndarray,
    record_file: Path,
    bar: tqdm,
) -> None:
    """Score ``batches`` and append the records of their items not yet ``done`` to ``record_file``."""
    record_size = record_dtype(teacher.output_dim).itemsize
    with _open_own_record_file(record_file, record_size) as f:
        for batch, values in scored_batches(teacher, work.items, batches, work.tokens, work.query_ids):
            check_finite(values, batch, work, teacher)
            # The whole batch is rerun (same shapes, same numbers) but only missing items are written.
            missing = ~done[batch]
            f.write(encode_records(batch[missing], values[missing]))
            f.flush()
            bar.update(int(missing.sum()))


def require_reiterable(groups: Iterable[RankingGroup]) -> None:
    """Refuse a one-shot iterator: scoring reads the groups twice (to plan, then to write)."""
    if isinstance(groups, Iterator):
        raise TypeError(
            "groups are read twice (to plan the work, then to write the scores), so a one-shot iterator or "
            "generator cannot be scored. Fix: pass a list, or hf_distill.data.RankingSource(path) to stream a file."
        )


def score_to_file(
    teacher: Teacher,
    groups: Iterable[RankingGroup],
    output_file: str | os.PathLike,
    max_tokens_per_batch: int = DEFAULT_MAX_TOKENS_PER_BATCH,
    overwrite_partial: bool = False,
    input_name: str | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    progress: bool = True,
    poll_seconds: float = 1.0,
) -> Path | None:
    """Score every candidate of ``groups`` and write listwise JSONL ``{query, passages, scores, labels}``.

    ``groups`` is read twice by rank 0 (to find the unique items, then to write the scores) and once by the other
    ranks (to check they were given the same input): a list, or :class:`hf_distill.data.RankingSource` to stream a
    file of any size. Memory then holds ~40 bytes per candidate (item numbers, lengths, the plan, one float per
    pair); the texts wait on disk in the work dir, and an embedding teacher's vectors too.

    Call it in every process of an ``accelerate launch`` (rank and world size come from the environment).
    Rank 0 returns the output path once the file is complete; other ranks return ``None`` when their share is
    done. Rerunning after a kill resumes from ``<output_file>.partial/``; rerunning after success finds the run
    complete (``<output_file>.scoring.json`` holds its fingerprint) and scores nothing. See the module docstring.

    Raises:
        ResumeMismatchError: the work dir was made with other input, teacher or options.
        NonFiniteScoreError: the teacher gave a NaN or infinite value (the run stops at that batch).
        ConfigError: with several nodes, the work dir is not on a file system they share.
    """
    require_reiterable(groups)
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    output_file = Path(output_file)
    output_file.parent.mkdir(parents=True, exist_ok=True)
    work_dir = partial_dir_for(output_file)
    items_tmp = Path(f"{work_dir}.items.tmp")  # rank 0's items, until they move into the work dir
    if rank == 0:
        try:
            work = build_work(teacher, groups, items_path=items_tmp)
        except BaseException:
            items_tmp.unlink(missing_ok=True)
            raise
        input_fingerprint = {"groups_sha256": work.groups_sha256, "num_groups": work.num_groups}
    else:
        work, input_fingerprint = None, groups_fingerprint(groups)  # only to check every process has the same input
    fingerprint = {
        "input": input_fingerprint,
        "teacher": teacher.fingerprint(),
        "num_items": len(work.items) if work is not None else None,
        "record_dim": teacher.output_dim,
    }
    if input_name is not None and work is not None:
        logger.info(
            "%s: %d groups, %d pairs, %d unique %ss",
            input_name,
            work.num_groups,
            work.num_pairs,
            len(work.items),
            work.unit,
        )
    if _already_complete(output_file, work_dir, fingerprint):
        if rank == 0:
            items_tmp.unlink(missing_ok=True)
            logger.info("%s is already complete (same input, teacher and options): nothing to score", output_file)
        return output_file if rank == 0 else None
    start = time.perf_counter()
    if rank == 0:
        try:
            lengths = prepare_work_dir(work_dir, fingerprint, teacher, work, overwrite_partial)
        finally:
            items_tmp.unlink(missing_ok=True)
        for stale in [*work_dir.glob("done.rank*"), *work_dir.glob("failed.rank*")]:
            stale.unlink()  # markers of an earlier attempt: this one writes its own
    manifest_path = work_dir / "manifest.json"
    if not _all_ranks_agree(world_size, manifest_path.exists):
        raise ConfigError(
            f"{work_dir} is not visible from every process (rank {rank} on {socket.gethostname()} "
            f"{'sees' if manifest_path.exists() else 'does not see'} it): with several nodes the work dir, next to "
            "--output_file, must be on a file system all nodes share. Fix: pass an --output_file on a shared file "
            "system (NFS, Lustre, ...), or score on one node."
        )
    if rank != 0:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if not _same_run(manifest["fingerprint"], fingerprint):
            raise ResumeMismatchError(
                f"rank {rank} computed another fingerprint than rank 0 for {work_dir}: "
                + "; ".join(
                    describe_changes(
                        manifest["fingerprint"], {**fingerprint, "num_items": manifest["fingerprint"].get("num_items")}
                    )
                )
                + ". Fix: give every process the same input, teacher and options."
            )
        fingerprint["num_items"] = manifest["fingerprint"]["num_items"]
        work = _load_shared_work(work_dir, teacher.unit)
        lengths = np.load(work_dir / "lengths.npy")

    num_items = fingerprint["num_items"]
    plan = plan_for(teacher, work, lengths, max_tokens_per_batch)
    batches = plan[rank::world_size]
    store = RecordStore(work_dir, num_items, teacher.output_dim)
    store.refresh()
    todo = [batch for batch in batches if not store.done[batch].all()]
    remaining = int(sum((~store.done[batch]).sum() for batch in todo))
    mine = int(sum(len(batch) for batch in batches))
    if rank == 0 and mine - remaining:
        logger.info("resuming: %d of this process's %d %ss already scored", mine - remaining, mine, work.unit)

    if todo:
        _ = teacher.model  # load the weights now, so the progress bar's pairs/s measure scoring only
    desc = "teacher scoring" if world_size == 1 else f"teacher scoring (rank 0 of {world_size})"
    try:
        with _progress(remaining, teacher.unit, progress and rank == 0, desc) as bar:
            _score_batches(teacher, work, todo, store.done, work_dir / f"scores.rank{rank}.bin", bar)
    except BaseException as error:
        if world_size > 1:  # rank 0 is waiting for this rank's share: tell it why it will not come
            _write_text_atomic(_marker(work_dir, "failed", rank), f"rank {rank}: {error}")
        raise
    _write_text_atomic(_marker(work_dir, "done", rank), str(len(todo)))

    if rank != 0:
        work.items.close()
        if work.tokens is not None:
            work.tokens.close()
        return None
    _wait_for_ranks(work_dir, world_size, store, num_items, work.unit, poll_seconds)
    full = _read_all_records(work_dir, num_items, teacher)
    missing = np.flatnonzero(~full.done)
    if len(missing):
        # Records that never read back valid (a torn or unflushed write another process made): score them here.
        logger.warning(
            "%d %ss have no valid record after every process finished: scoring them again", len(missing), work.unit
        )
        again = [batch[~full.done[batch]] for batch in plan if not full.done[batch].all()]
        with _progress(len(missing), teacher.unit, progress, "teacher scoring (missing)") as bar:
            _score_batches(teacher, work, again, full.done, work_dir / "scores.rank0.bin", bar)
        full = _read_all_records(work_dir, num_items, teacher)
        if int(full.done.sum()) < num_items:
            raise HfDistillError(
                f"{work_dir}: records still unreadable after rescoring. Fix: delete {work_dir} and rerun."
            )
    write_listwise_jsonl(combine(work, full.values, groups), output_file)
    if isinstance(full.values, RecordValues):
        full.values.close()
    work.items.close()
    if work.tokens is not None:
        work.tokens.close()
    _write_json_atomic(completion_file_for(output_file), {"version": MANIFEST_VERSION, "fingerprint": fingerprint})
    shutil.rmtree(work_dir, ignore_errors=True)
    _log_summary(plan, lengths, work, time.perf_counter() - start)
    return output_file


def _read_all_records(work_dir: Path, num_items: int, teacher: Teacher) -> RecordStore:
    """Every valid record of the work dir with its values: pair scores in memory, embeddings read in place."""
    full = RecordStore(work_dir, num_items, teacher.output_dim, keep_values=True, in_place=teacher.unit == "text")
    full.refresh()
    return full


def _log_summary(plan: Sequence[np.ndarray], lengths: np.ndarray, work: ScoringWork, seconds: float) -> None:
    """Tokens scored, their padding share and the pair rate of the whole run (all processes)."""
    real = int(sum(int(lengths[batch].sum()) for batch in plan))
    padded = int(sum(len(batch) * int(lengths[batch].max()) for batch in plan if len(batch)))
    logger.info(
        "scored %d unique %ss (%d pairs, %d tokens, padding %.1f%% of %d padded tokens) in %.1f s: %.0f pairs/s",
        len(work.items),
        work.unit,
        work.num_pairs,
        real,
        100.0 * (padded - real) / max(padded, 1),
        padded,
        seconds,
        work.num_pairs / max(seconds, 1e-9),
    )
