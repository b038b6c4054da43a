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
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from hf_distill.data import RankingGroup, write_listwise_jsonl
from hf_distill.errors import ResumeMismatchError
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
        for group in groups:
            refs.append([item_id((group.query, passage)) for passage in group.passages])
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
    lengths = teacher.lengths(work.items) if work.items else []
    values = np.zeros((len(work.items), teacher.output_dim), dtype=np.float32)
    with _progress(len(work.items), teacher.unit, progress, "teacher scoring") as bar:
        for batch in plan_batches(lengths, max_tokens_per_batch):
            values[batch] = teacher.score_batch([work.items[i] for i in batch])
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


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


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
    lengths = np.asarray(teacher.lengths(work.items) if work.items else [], dtype=np.int32)
    tmp = work_dir / ".lengths.tmp.npy"
    np.save(tmp, lengths)
    os.replace(tmp, lengths_path)
    # The manifest is written last: its presence means the lengths and fingerprint are complete.
    _write_json_atomic(manifest_path, {"version": MANIFEST_VERSION, "fingerprint": fingerprint})
    return lengths


def _barrier(world_size: int) -> None:
    """Wait for all processes (used once, before scoring). A CPU gloo group, torn down right after, so the long
    wait at the end (ranks finishing at different times) never hits a collective timeout."""
    if world_size <= 1:
        return
    import torch.distributed as dist

    created = False
    if not dist.is_initialized():
        # Rank 0 may tokenize millions of items before it arrives: allow hours, not the default 30 minutes.
        dist.init_process_group(backend="gloo", timeout=timedelta(hours=6))
        created = True
    dist.barrier()
    if created:
        dist.destroy_process_group()


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
    done. Rerunning after a kill resumes from ``<output_file>.partial/``; see the module docstring.

    Raises:
        ResumeMismatchError: the work dir was made with other input, teacher or options.
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
    if rank == 0:
        lengths = prepare_work_dir(work_dir, fingerprint, teacher, work, overwrite_partial)
    _barrier(world_size)
    if rank != 0:
        manifest = json.loads((work_dir / "manifest.json").read_text(encoding="utf-8"))
        if manifest["fingerprint"] != fingerprint:
            raise ResumeMismatchError(
                f"rank {rank} computed another fingerprint than rank 0 for {work_dir}: "
                + "; ".join(describe_changes(manifest["fingerprint"], fingerprint))
                + ". Fix: give every process the same input, teacher and options."
            )
        lengths = np.load(work_dir / "lengths.npy")

    batches = plan_batches(lengths, max_tokens_per_batch)[rank::world_size]
    store = RecordStore(work_dir, len(work.items), teacher.output_dim)
    store.refresh()
    todo = [batch for batch in batches if not store.done[batch].all()]
    remaining = int(sum((~store.done[batch]).sum() for batch in todo))
    mine = int(sum(len(batch) for batch in batches))
    if rank == 0 and mine - remaining:
        logger.info("resuming: %d of this process's %d %ss already scored", mine - remaining, mine, work.unit)

    if todo:
        _ = teacher.model  # load the weights now, so the progress bar's pairs/s measure scoring only
    record_size = record_dtype(teacher.output_dim).itemsize
    desc = "teacher scoring" if world_size == 1 else f"teacher scoring (rank 0 of {world_size})"
    with (
        _open_own_record_file(work_dir / f"scores.rank{rank}.bin", record_size) as f,
        _progress(remaining, teacher.unit, progress and rank == 0, desc) as bar,
    ):
        for batch in todo:
            values = teacher.score_batch([work.items[i] for i in batch])
            # The whole batch is rerun (same shapes, same numbers) but only missing items are written.
            missing = ~store.done[batch]
            f.write(encode_records(batch[missing], values[missing]))
            f.flush()
            bar.update(int(missing.sum()))

    if rank != 0:
        return None
    last_log = 0.0
    while store.refresh() < len(work.items):
        if time.monotonic() - last_log > 60:
            logger.info(
                "waiting for the other processes: %d of %d %ss scored",
                int(store.done.sum()),
                len(work.items),
                work.unit,
            )
            last_log = time.monotonic()
        time.sleep(poll_seconds)
    full = RecordStore(work_dir, len(work.items), teacher.output_dim, keep_values=True)
    full.refresh()
    scores = combine(work, full.values)
    scored = [RankingGroup(g.query, list(g.passages), s, g.labels) for g, s in zip(groups, scores)]
    write_listwise_jsonl(scored, output_file)
    shutil.rmtree(work_dir, ignore_errors=True)
    return output_file
