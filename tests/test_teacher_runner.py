"""The teacher runner at the users' scale: bounded tokenization, faults that stop at once and say what to do, a
finished run that is not redone, a rank 0 that cannot hang, CPU work ahead of the forward, query-grouped plans."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_distill.data import RankingGroup
from hf_distill.errors import ConfigError, HfDistillError, NonFiniteScoreError
from hf_distill.teachers import Teacher, runner, score_groups, score_to_file
from hf_distill.teachers.runner import (
    completion_file_for,
    partial_dir_for,
    plan_batches,
    plan_query_batches,
    record_dtype,
)


def groups(num_queries: int = 6, candidates: int = 5) -> list[RankingGroup]:
    rng = np.random.default_rng(0)
    words = "list files kernel memory process shell copy move directory user".split()
    out = []
    for q in range(num_queries):
        passages = [" ".join(rng.choice(words, size=int(rng.integers(2, 12)))) + f" {q}.{c}" for c in range(candidates)]
        out.append(RankingGroup(f"query {q} " + " ".join(rng.choice(words, size=3)), passages, None, [1] + [0] * 4))
    return out


class CountingTeacher(Teacher):
    """Score = characters of query + passage; records every call so tests can see how it was driven."""

    kind = "cross_encoder"

    def __init__(self, version: int = 1, nan_on_batch: int | None = None):
        super().__init__("counting", device="cpu")
        self.version, self.nan_on_batch = version, nan_on_batch
        self.runs: Counter = Counter()
        self.length_calls: list[int] = []
        self.batches: list[list] = []
        self.events: list[str] = []

    def fingerprint(self):
        return {"kind": "counting", "version": self.version}

    def _load_model(self):
        return torch.nn.Identity()

    def lengths(self, items):
        self.length_calls.append(len(items))
        return [len(q.split()) + len(p.split()) for q, p in items]

    def prepare_batch(self, items):
        self.events.append(f"prepare {len(self.events)}")
        return list(items)

    def run_batch(self, items):
        self.events.append("run start")
        time.sleep(0.05)  # a forward that takes a while: the next batch's preparation must overlap it
        self.runs.update(items)
        self.batches.append(list(items))
        values = np.array([[len(q) + len(p) + 0.25] for q, p in items], dtype=np.float32)
        if self.nan_on_batch is not None and len(self.batches) == self.nan_on_batch + 1:
            values[-1, 0] = np.nan
        self.events.append("run end")
        return values


def test_lengths_are_tokenized_in_bounded_chunks(tmp_path, monkeypatch):
    """One tokenizer call over every item keeps every token id alive (~220 bytes a token); chunks bound it."""
    monkeypatch.setattr(runner, "LENGTH_CHUNK", 4)
    teacher = CountingTeacher()
    output = score_to_file(teacher, groups(), tmp_path / "scored.jsonl", max_tokens_per_batch=64, progress=False)
    assert max(teacher.length_calls) <= 4 and sum(teacher.length_calls) == 30
    reference = CountingTeacher()
    assert score_groups(reference, groups(), max_tokens_per_batch=64, progress=False) == [
        json.loads(line)["scores"] for line in output.read_text().splitlines()
    ]


def test_a_nan_score_stops_at_its_batch_and_the_rest_resumes(tmp_path):
    output = tmp_path / "scored.jsonl"
    broken = CountingTeacher(nan_on_batch=1)
    with pytest.raises(NonFiniteScoreError, match=r"non-finite value \(\[nan\]\) for query 'query .*--dtype bfloat16"):
        score_to_file(broken, groups(), output, max_tokens_per_batch=16, progress=False)
    assert len(broken.batches) == 2  # stopped at the batch with the NaN, not at the end of the job
    records = partial_dir_for(output) / "scores.rank0.bin"
    kept = records.stat().st_size // record_dtype(1).itemsize
    assert kept == len(broken.batches[0])  # the first batch is kept, nothing of the NaN batch is written
    fixed = CountingTeacher()
    score_to_file(fixed, groups(), output, max_tokens_per_batch=16, progress=False)
    assert sum(fixed.runs.values()) == 30 - kept
    scores = [json.loads(line)["scores"] for line in output.read_text().splitlines()]
    assert all(np.isfinite(s).all() for s in scores)


def test_score_groups_stops_at_a_nan_too():
    with pytest.raises(NonFiniteScoreError):
        score_groups(CountingTeacher(nan_on_batch=0), groups(), max_tokens_per_batch=16, progress=False)


def test_a_rerun_after_success_is_already_complete(tmp_path, caplog):
    output = tmp_path / "scored.jsonl"
    score_to_file(CountingTeacher(), groups(), output, max_tokens_per_batch=64, progress=False)
    content = output.read_bytes()
    again = CountingTeacher()
    with caplog.at_level(logging.INFO, logger="hf_distill"):
        assert score_to_file(again, groups(), output, max_tokens_per_batch=64, progress=False) == output
    assert not again.runs and "already complete" in caplog.text
    assert output.read_bytes() == content
    # Another teacher (or input) is not "complete": it is scored and replaces the file.
    other = CountingTeacher(version=2)
    score_to_file(other, groups(), output, max_tokens_per_batch=64, progress=False)
    assert sum(other.runs.values()) == 30
    assert json.loads(completion_file_for(output).read_text())["fingerprint"]["teacher"]["version"] == 2


def test_the_next_batch_is_prepared_while_this_one_runs():
    teacher = CountingTeacher()
    score_groups(teacher, groups(), max_tokens_per_batch=16, progress=False)
    first_end = teacher.events.index("run end")
    prepared_before_first_end = [e for e in teacher.events[:first_end] if e.startswith("prepare")]
    assert len(prepared_before_first_end) == 2  # batch 0, and batch 1 while batch 0 ran


def test_rank0_does_not_hang_on_a_record_that_never_reads_valid(tmp_path, monkeypatch):
    """Two ranks (threads here); rank 1 writes a record with a bad checksum (a page another node has not flushed,
    on NFS). Rank 0 used to wait forever for that item; now it waits for rank 1 to be done and scores it itself."""
    monkeypatch.setattr(runner, "_all_ranks_agree", lambda world_size, ok: ok())
    output = tmp_path / "scored.jsonl"
    real_encode = runner.encode_records

    def corrupt_in_rank1(indices, values):
        raw = bytearray(real_encode(indices, values))
        if threading.current_thread().name == "rank1" and raw:
            raw[-1] ^= 0xFF  # the last record's CRC no longer matches
        return bytes(raw)

    monkeypatch.setattr(runner, "encode_records", corrupt_in_rank1)
    results: dict = {}

    def run(rank: int) -> None:
        try:
            results[rank] = score_to_file(
                CountingTeacher(), groups(), output, max_tokens_per_batch=16, rank=rank, world_size=2,
                progress=False, poll_seconds=0.05,
            )  # fmt: skip
        except BaseException as error:  # noqa: BLE001 - reported below
            results[rank] = error

    rank0 = threading.Thread(target=run, args=(0,), name="rank0")
    rank0.start()
    deadline = time.monotonic() + 30
    while not (partial_dir_for(output) / "manifest.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    rank1 = threading.Thread(target=run, args=(1,), name="rank1")
    rank1.start()
    rank1.join(30)
    rank0.join(30)
    assert not rank0.is_alive(), "rank 0 hangs"
    assert results == {0: output, 1: None}
    reference = score_groups(CountingTeacher(), groups(), max_tokens_per_batch=16, progress=False)
    assert [json.loads(line)["scores"] for line in output.read_text().splitlines()] == reference


def test_a_failed_rank_stops_rank0_with_its_reason(tmp_path):
    work_dir = tmp_path / "work"
    work_dir.mkdir()
    (work_dir / "done.rank0").write_text("3")
    (work_dir / "failed.rank1").write_text("rank 1: the teacher gave a non-finite value")
    store = runner.RecordStore(work_dir, 10, 1)
    with pytest.raises(HfDistillError, match="rank1 stopped: rank 1: the teacher gave a non-finite value"):
        runner._wait_for_ranks(work_dir, 2, store, 10, "pair", 0.01)


def test_a_work_dir_other_nodes_cannot_see_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "_all_ranks_agree", lambda world_size, ok: False)
    with pytest.raises(ConfigError, match="must be on a file system all nodes share"):
        score_to_file(CountingTeacher(), groups(), tmp_path / "s.jsonl", rank=0, world_size=2, progress=False)


def test_query_grouped_plan_keeps_each_query_together_within_the_budget():
    rng = np.random.default_rng(1)
    query_ids = np.repeat(np.arange(20), rng.integers(1, 40, size=20))
    lengths = rng.integers(5, 60, size=len(query_ids))
    batches = plan_query_batches(lengths, query_ids, 512)
    order = np.concatenate(batches)
    assert sorted(order.tolist()) == list(range(len(lengths)))  # every item exactly once
    runs = [q for i, q in enumerate(query_ids[order]) if i == 0 or q != query_ids[order][i - 1]]
    assert len(runs) == len(set(runs))  # a query's items are contiguous in the plan
    for batch in batches:
        assert len(batch) == 1 or len(batch) * lengths[batch].max() <= 512
        for q in np.unique(query_ids[batch]):  # longest first within a query
            own = lengths[batch][query_ids[batch] == q]
            assert (np.diff(own) <= 0).all()
    assert len(batches) <= 2 * len(plan_batches(lengths, 512))  # grouping costs few extra batches


def test_a_teacher_that_batches_by_query_gets_its_queries_together(tmp_path):
    teacher = CountingTeacher()
    teacher.batches_by_query = True
    score_to_file(teacher, groups(), tmp_path / "s.jsonl", max_tokens_per_batch=80, progress=False)
    seen = [q for batch in teacher.batches for q, _ in batch]
    runs = [q for i, q in enumerate(seen) if i == 0 or q != seen[i - 1]]
    assert len(runs) == len(set(runs))


def test_the_summary_line_gives_tokens_padding_and_pairs_per_second(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="hf_distill"):
        score_to_file(CountingTeacher(), groups(), tmp_path / "s.jsonl", max_tokens_per_batch=64, progress=False)
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("scored "))
    assert "30 pairs" in line and "tokens, padding" in line and "pairs/s" in line


class FastTeacher(CountingTeacher):
    """CountingTeacher without the pause: for runs of many thousand pairs."""

    def prepare_batch(self, items):
        return list(items)

    def run_batch(self, items):
        return np.array([[len(q) + len(p) + 0.25] for q, p in items], dtype=np.float32)


class TextTeacher(Teacher):
    """A text teacher (embedding-like): a normalised 8-dim vector per text, from its characters."""

    kind = "bi_encoder"

    def __init__(self):
        super().__init__("text", device="cpu")

    @property
    def output_dim(self):
        return 8

    def fingerprint(self):
        return {"kind": "text"}

    def _load_model(self):
        return torch.nn.Identity()

    def query_text(self, query):
        return f"query: {query}"

    def passage_text(self, passage):
        return passage

    def lengths(self, items):
        return [len(t.split()) for t in items]

    def prepare_batch(self, items):
        return list(items)

    def run_batch(self, items):
        vectors = np.array([[(sum(map(ord, t)) * (d + 1)) % 97 + 1.0 for d in range(8)] for t in items], np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def write_mteb_rows(path, num_queries, candidates=10, words_per_passage=40):
    rng = np.random.default_rng(0)
    vocabulary = [f"word{i}" for i in range(2000)]
    with open(path, "w", encoding="utf-8") as f:
        for q in range(num_queries):
            passages = [" ".join(rng.choice(vocabulary, size=words_per_passage)) for _ in range(candidates)]
            f.write(json.dumps({"query": f"query {q}", "positive": passages[:1], "negative": passages[1:]}) + "\n")
    return path


def _traced_peak_bytes(function) -> int:
    import gc
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_streamed_scoring_holds_no_text_in_memory(tmp_path):
    """Scoring a file streamed from disk: the peak grows by a few dozen bytes per pair (item numbers, lengths, plan,
    one float), not by the texts (~400 bytes per pair here; ~3 KB for real passages). Before, every group, every
    unique pair and a dict over them were held: 563 bytes per pair on this data (41 now)."""
    from hf_distill.data import RankingSource

    peaks = {}
    for num_queries in (200, 2000):
        rows = write_mteb_rows(tmp_path / f"rows{num_queries}.jsonl", num_queries)
        output = tmp_path / f"scored{num_queries}.jsonl"
        source = RankingSource(rows, require_scores=False)
        peaks[num_queries] = _traced_peak_bytes(
            lambda source=source, output=output: score_to_file(
                FastTeacher(), source, output, max_tokens_per_batch=4096, progress=False
            )
        )
        assert len(output.read_text().splitlines()) == num_queries
    per_pair = (peaks[2000] - peaks[200]) / (1800 * 10)
    assert per_pair < 150, f"{per_pair:.0f} bytes per pair"


def test_a_streamed_file_scores_as_the_list_does(tmp_path):
    from hf_distill.data import RankingSource, read_groups

    rows = write_mteb_rows(tmp_path / "rows.jsonl", 30, candidates=4, words_per_passage=6)
    streamed = score_to_file(
        FastTeacher(), RankingSource(rows, require_scores=False), tmp_path / "a.jsonl", max_tokens_per_batch=64
    )
    listed = score_to_file(
        FastTeacher(), read_groups(rows, require_scores=False), tmp_path / "b.jsonl", max_tokens_per_batch=64
    )
    assert streamed.read_bytes() == listed.read_bytes()
    assert not partial_dir_for(streamed).exists() and not Path(f"{partial_dir_for(streamed)}.items.tmp").exists()


def test_embedding_vectors_are_read_in_place_and_give_the_in_memory_cosines(tmp_path, monkeypatch):
    read = []
    real_getitem = runner.RecordValues.__getitem__
    monkeypatch.setattr(
        runner.RecordValues, "__getitem__", lambda self, i: read.append(len(i)) or real_getitem(self, i)
    )
    data = groups() + groups(3)  # repeated queries and passages: each text embedded once
    output = score_to_file(TextTeacher(), data, tmp_path / "e.jsonl", max_tokens_per_batch=32, progress=False)
    assert sum(read) == sum(1 + len(g.passages) for g in data)  # every vector came from the record files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.jsonl", "e.jsonl.scoring.json"]
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    expected = score_groups(TextTeacher(), data, max_tokens_per_batch=32, progress=False)
    assert [r["scores"] for r in rows] == expected
    one = TextTeacher().run_batch([f"query: {data[0].query}", data[0].passages[2]])
    assert rows[0]["scores"][2] == pytest.approx(float(one[0] @ one[1]), abs=1e-6)


def test_a_one_shot_iterator_is_refused_with_what_to_pass():
    with pytest.raises(TypeError, match="RankingSource"):
        score_to_file(FastTeacher(), iter(groups()), "unused.jsonl", progress=False)


def test_an_input_that_changes_between_the_two_reads_is_one_clear_error(tmp_path):
    class Shrinking:
        def __init__(self):
            self.reads = 0

        def __iter__(self):
            self.reads += 1
            return iter(groups() if self.reads == 1 else groups()[:4])

    with pytest.raises(HfDistillError, match="the input changed while it was being scored"):
        score_to_file(FastTeacher(), Shrinking(), tmp_path / "s.jsonl", max_tokens_per_batch=64, progress=False)


def test_on_a_gpu_the_next_forward_is_launched_before_this_batch_is_copied_back(tmp_path):
    """results_ahead (a CUDA device): batch k+1's forward starts before batch k's values are waited for, so the
    copy back and the record writes overlap the accelerator's work. A NaN still stops before its batch is written."""
    from hf_distill.teachers.models import PendingValues

    class Pending(PendingValues):
        def __init__(self, values, log, k):
            super().__init__(values)
            self.log, self.k = log, k

        def result(self):
            self.log.append(f"result {self.k}")
            return super().result()

    class AheadTeacher(FastTeacher):
        results_ahead = True

        def __init__(self, nan_on_batch=None):
            super().__init__(nan_on_batch=nan_on_batch)
            self.log = []

        def start_batch(self, prepared):
            k = sum(e.startswith("start") for e in self.log)
            self.log.append(f"start {k}")
            values = super().run_batch(prepared)
            if self.nan_on_batch == k:
                values[0, 0] = np.nan
            return Pending(values, self.log, k)

    teacher = AheadTeacher()
    output = score_to_file(teacher, groups(), tmp_path / "s.jsonl", max_tokens_per_batch=16, progress=False)
    starts = [e for e in teacher.log if e.startswith("start")]
    assert len(starts) > 2
    assert teacher.log[:3] == ["start 0", "start 1", "result 0"]  # batch 1 runs while batch 0 comes back
    assert [json.loads(line)["scores"] for line in output.read_text().splitlines()] == score_groups(
        FastTeacher(), groups(), max_tokens_per_batch=16, progress=False
    )
    broken = AheadTeacher(nan_on_batch=1)
    with pytest.raises(NonFiniteScoreError):
        score_to_file(broken, groups(), tmp_path / "t.jsonl", max_tokens_per_batch=16, progress=False)
    kept = (partial_dir_for(tmp_path / "t.jsonl") / "scores.rank0.bin").stat().st_size // record_dtype(1).itemsize
    first_batch = runner.plan_batches([len(q.split()) + len(p.split()) for g in groups() for q, p in
                                       [(g.query, x) for x in g.passages]], 16)[0]  # fmt: skip
    assert kept == len(first_batch)  # batch 0 written, the NaN batch not
