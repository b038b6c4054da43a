"""Running a teacher over ranking groups: once per unique item, in length-sorted token-budget batches, spread
over processes, resumable after a kill.

**Work.** The groups are flattened into unique items in first-seen order (:func:`build_work`): unique
``(query, passage)`` pairs for pair teachers, unique model input texts for text teachers (a query that recurs in
many groups, or a passage shared by many queries, is embedded once).

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
from collections.abc import Callable, Iterator, Sequence
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


@dataclass
class ScoringWork:
    """Unique items and, per group, where its candidates' items are.

    ``refs[g]`` is a list of item indices (pair teachers) or ``(query item, [passage items])`` (text teachers).
    """

    unit: str
    items: list[Any]
    refs: list[Any]
    query_ids: np.ndarray | None = None  # pair items: the index of each item's query (for query-grouped plans)

    @property
    def num_pairs(self) -> int:
        return sum(len(r) if self.unit == "pair" else len(r[1]) for r in self.refs)


def build_work(teacher: Teacher, groups: Sequence[RankingGroup]) -> ScoringWork:
    """Flatten groups into unique items (first-seen order) and the references that rebuild the groups."""
    index: dict[Any, int] = {}
    items: list[Any] = []

    def item_id(key: Any) -> int:
        found = index.get(key)
        if found is None:
            found = index[key] = len(items)
            items.append(key)
        return found

    refs: list[Any] = []
    if teacher.unit == "pair":
        query_index: dict[str, int] = {}
        query_ids: list[int] = []
        for group in groups:
            row = []
            for passage in group.passages:
                before = len(items)
                row.append(item_id((group.query, passage)))
                if len(items) > before:
                    query_ids.append(query_index.setdefault(group.query, len(query_index)))
            refs.append(row)
        return ScoringWork(teacher.unit, items, refs, np.asarray(query_ids, dtype=np.int64))
    else:
        for group in groups:
            query = item_id(teacher.query_text(group.query))
            refs.append((query, [item_id(teacher.passage_text(passage)) for passage in group.passages]))
    return ScoringWork(teacher.unit, items, refs)


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
        lengths[start : start + chunk] = teacher.lengths(items[start : start + chunk])
    return lengths


def prepared_batches(
    teacher: Teacher, items: Sequence[Any], batches: Sequence[np.ndarray]
) -> Iterator[tuple[np.ndarray, Any]]:
    """``(batch, model inputs)`` in order, the inputs of batch ``k + 1`` prepared on a thread while the caller runs
    batch ``k``: tokenizing, padding and pinning (:meth:`Teacher.prepare_batch`) overlap the forward, so the
    accelerator does not wait for the CPU between batches."""
    if not batches:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="hf_distill-prepare") as pool:
        pending = pool.submit(teacher.prepare_batch, [items[i] for i in batches[0]])
        for k, batch in enumerate(batches):
            prepared = pending.result()
            if k + 1 < len(batches):
                pending = pool.submit(teacher.prepare_batch, [items[i] for i in batches[k + 1]])
            yield batch, prepared


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


def combine(work: ScoringWork, values: np.ndarray) -> list[list[float]]:
    """Per-group score lists from per-item values (a pair's score, or the cosine of two normalised embeddings)."""
    if work.unit == "pair":
        flat = values[:, 0]
        return [[float(flat[i]) for i in ref] for ref in work.refs]
    scores = []
    for query, passages in work.refs:
        cosines = values[passages] @ values[query]  # float32, deterministic for fixed inputs
        scores.append([float(c) for c in cosines])
    return scores


def _progress(total: int, unit: str, enabled: bool, desc: str) -> tqdm:
    return tqdm(total=total, unit=unit, desc=desc, disable=not enabled, dynamic_ncols=True, smoothing=0.1)


def score_groups(
    teacher: Teacher,
    groups: Sequence[RankingGroup],
    max_tokens_per_batch: int = DEFAULT_MAX_TOKENS_PER_BATCH,
    progress: bool = True,
) -> list[list[float]]:
    """Score groups in memory, in one process, with nothing written: a list of raw fp32 scores per group."""
    work = build_work(teacher, groups)
    lengths = item_lengths(teacher, work.items)
    values = np.zeros((len(work.items), teacher.output_dim), dtype=np.float32)
    batches = plan_for(teacher, work, lengths, max_tokens_per_batch)
    with _progress(len(work.items), teacher.unit, progress, "teacher scoring") as bar:
        for batch, prepared in prepared_batches(teacher, work.items, batches):
            batch_values = teacher.run_batch(prepared)
            check_finite(batch_values, batch, work, teacher)
            values[batch] = batch_values
            bar.update(len(batch))
    return combine(work, values)


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


class RecordStore:
    """Reads every ``scores.rank*.bin`` of a work dir, incrementally, keeping which items are done.

    Only whole records with a valid CRC count; a torn or corrupt record is skipped (its item is scored again).
    """

    def __init__(self, work_dir: Path, num_items: int, dim: int, keep_values: bool = False):
        self.work_dir = work_dir
        self.dtype = record_dtype(dim)
        self.done = np.zeros(num_items, dtype=bool)
        self.values = np.zeros((num_items, dim), dtype=np.float32) if keep_values else None
        self.offsets: dict[str, int] = {}

    def refresh(self) -> int:
        """Read records written since the last call; returns the number of items done."""
        size = self.dtype.itemsize
        chunk = max(1, (64 << 20) // size) * size  # read 64 MB at a time: embedding records add up to GBs
        for path in sorted(self.work_dir.glob("scores.rank*.bin")):
            with open(path, "rb") as f:
                f.seek(self.offsets.get(path.name, 0))
                while True:
                    raw = f.read(chunk)
                    whole = len(raw) // size * size  # a torn last record waits for the next call (or a rerun)
                    if whole:
                        self._add(raw[:whole])
                        self.offsets[path.name] = self.offsets.get(path.name, 0) + whole
                    if len(raw) < chunk:
                        break
        return int(self.done.sum())

    def _add(self, raw: bytes) -> None:
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
        if self.values is not None:
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


def groups_fingerprint(groups: Sequence[RankingGroup]) -> str:
    """sha256 of the queries and passages, in order: what the scores depend on (labels are copied, not scored)."""
    digest = hashlib.sha256()
    for group in groups:
        digest.update(json.dumps([group.query, group.passages], ensure_ascii=False).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


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
    work_dir: Path, fingerprint: dict[str, Any], teacher: Teacher, work: ScoringWork, overwrite: bool
) -> np.ndarray:
    """Create, check or reset the work dir (rank 0 only); returns the item lengths, cached in ``lengths.npy``."""
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
    lengths_path = work_dir / "lengths.npy"
    if manifest_path.exists() and lengths_path.exists():
        return np.load(lengths_path)
    logger.info("tokenizing %d unique %ss to plan batches", len(work.items), work.unit)
    lengths = item_lengths(teacher, work.items)
    tmp = work_dir / ".lengths.tmp.npy"
    np.save(tmp, lengths)
    os.replace(tmp, lengths_path)
    # The manifest is written last: its presence means the lengths and fingerprint are complete.
    _write_json_atomic(manifest_path, {"version": MANIFEST_VERSION, "fingerprint": fingerprint})
    return lengths


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
        return json.loads(done.read_text(encoding="utf-8")).get("fingerprint") == fingerprint
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
        for batch, prepared in prepared_batches(teacher, work.items, batches):
            values = teacher.run_batch(prepared)
            check_finite(values, batch, work, teacher)
            # The whole batch is rerun (same shapes, same numbers) but only missing items are written.
            missing = ~done[batch]
            f.write(encode_records(batch[missing], values[missing]))
            f.flush()
            bar.update(int(missing.sum()))


def score_to_file(
    teacher: Teacher,
    groups: Sequence[RankingGroup],
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

    Call it in every process of an ``accelerate launch`` (rank and world size come from the environment).
    Rank 0 returns the output path once the file is complete; other ranks return ``None`` when their share is
    done. Rerunning after a kill resumes from ``<output_file>.partial/``; rerunning after success finds the run
    complete (``<output_file>.scoring.json`` holds its fingerprint) and scores nothing. See the module docstring.

    Raises:
        ResumeMismatchError: the work dir was made with other input, teacher or options.
        NonFiniteScoreError: the teacher gave a NaN or infinite value (the run stops at that batch).
        ConfigError: with several nodes, the work dir is not on a file system they share.
    """
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    output_file = Path(output_file)
    work_dir = partial_dir_for(output_file)
    work = build_work(teacher, groups)
    fingerprint = {
        "input": {"groups_sha256": groups_fingerprint(groups), "num_groups": len(groups)},
        "teacher": teacher.fingerprint(),
        "num_items": len(work.items),
        "record_dim": teacher.output_dim,
    }
    if input_name is not None:
        logger.info(
            "%s: %d groups, %d pairs, %d unique %ss",
            input_name,
            len(groups),
            work.num_pairs,
            len(work.items),
            work.unit,
        )
    if _already_complete(output_file, work_dir, fingerprint):
        if rank == 0:
            logger.info("%s is already complete (same input, teacher and options): nothing to score", output_file)
        return output_file if rank == 0 else None
    start = time.perf_counter()
    if rank == 0:
        lengths = prepare_work_dir(work_dir, fingerprint, teacher, work, overwrite_partial)
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
        if manifest["fingerprint"] != fingerprint:
            raise ResumeMismatchError(
                f"rank {rank} computed another fingerprint than rank 0 for {work_dir}: "
                + "; ".join(describe_changes(manifest["fingerprint"], fingerprint))
                + ". Fix: give every process the same input, teacher and options."
            )
        lengths = np.load(work_dir / "lengths.npy")

    plan = plan_for(teacher, work, lengths, max_tokens_per_batch)
    batches = plan[rank::world_size]
    store = RecordStore(work_dir, len(work.items), teacher.output_dim)
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
        return None
    _wait_for_ranks(work_dir, world_size, store, len(work.items), work.unit, poll_seconds)
    full = RecordStore(work_dir, len(work.items), teacher.output_dim, keep_values=True)
    full.refresh()
    missing = np.flatnonzero(~full.done)
    if len(missing):
        # Records that never read back valid (a torn or unflushed write another process made): score them here.
        logger.warning(
            "%d %ss have no valid record after every process finished: scoring them again", len(missing), work.unit
        )
        again = [batch[~full.done[batch]] for batch in plan if not full.done[batch].all()]
        with _progress(len(missing), teacher.unit, progress, "teacher scoring (missing)") as bar:
            _score_batches(teacher, work, again, full.done, work_dir / "scores.rank0.bin", bar)
        full = RecordStore(work_dir, len(work.items), teacher.output_dim, keep_values=True)
        if full.refresh() < len(work.items):
            raise HfDistillError(
                f"{work_dir}: records still unreadable after rescoring. Fix: delete {work_dir} and rerun."
            )
    scores = combine(work, full.values)
    scored = [RankingGroup(g.query, list(g.passages), s, g.labels) for g, s in zip(groups, scores)]
    write_listwise_jsonl(scored, output_file)
    _write_json_atomic(completion_file_for(output_file), {"version": MANIFEST_VERSION, "fingerprint": fingerprint})
    shutil.rmtree(work_dir, ignore_errors=True)
    _log_summary(plan, lengths, work, time.perf_counter() - start)
    return output_file


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
