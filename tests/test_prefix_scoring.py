"""Shared-prefix scoring of the Qwen3-Reranker HF teacher: the prefix/remainder split and its scores.

Each query's prompt prefix runs once per batch and its keys/values serve the query's candidates
(:meth:`hf_distill.prompts.Qwen3RerankerPrompt.batch`, :class:`hf_distill.teachers.models.Qwen3RerankerTeacher`).
The scores must be those of the plain path (``prefix_cache=False``) and of the model card's computation (one
unpadded prompt, full ``lm_head``), on batches built the way the runner builds them for a ``batches_by_query``
teacher: a query's candidates contiguous, longest first.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from hf_distill.data import RankingGroup
from hf_distill.prompts import Qwen3RerankerPrompt, RerankerBatch, common_prefix_length
from hf_distill.teachers import score_groups
from hf_distill.teachers.models import Qwen3RerankerTeacher

from tiny_models import build_tiny_qwen3_tokenizer, tiny_qwen3_config

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: small matmuls run fastest on one thread

MAX_LENGTH = 120  # short enough that the long documents below are cut
LONG = "print display manual page terminal shell script variable command option " * 12


def query_batches(pairs: list[tuple[str, str]], lengths: list[int], size: int) -> list[list[int]]:
    """Batches as the runner plans them for a ``batches_by_query`` teacher: queries longest first, a query's items
    contiguous and longest first, cut every ``size`` items (so a query may continue in the next batch)."""
    queries: dict[str, list[int]] = {}
    for i, (query, _) in enumerate(pairs):
        queries.setdefault(query, []).append(i)
    order = [
        i
        for rows in sorted(queries.values(), key=lambda rows: -max(lengths[i] for i in rows))
        for i in sorted(rows, key=lambda i: (-lengths[i], i))
    ]
    return [order[start : start + size] for start in range(0, len(order), size)]


def hard_pairs() -> list[tuple[str, str]]:
    """Queries with many, two and one candidates; documents cut at ``MAX_LENGTH``; duplicates; two candidates
    that are the same once cut (so their remainder is the last token alone); a query that is a prefix of another."""
    return [
        ("list files in a directory", "ls lists directory contents"),
        ("list files in a directory", "the kernel schedules every process"),
        ("list files in a directory", "a"),
        ("list files in a directory", LONG),  # cut at MAX_LENGTH
        ("list files in a directory", LONG + " copy"),  # the same prompt as the one above once cut
        ("list files in a directory", "ls lists directory contents"),  # a duplicate
        ("list files", "ls lists directory contents"),  # a query that starts another query
        ("list files", "remove archive compress"),
        ("what does the kernel do", "the kernel schedules every process and manages memory"),
        ("what does the kernel do", "a shell runs commands"),
        ("user group permission", "chmod changes the permission of a file"),  # one candidate
        ("network socket", LONG),
        ("network socket", LONG + " memory"),
    ]


@pytest.fixture(scope="module")
def teachers(tiny_qwen3):
    on = Qwen3RerankerTeacher(tiny_qwen3, max_length=MAX_LENGTH, device="cpu")
    off = Qwen3RerankerTeacher(tiny_qwen3, max_length=MAX_LENGTH, device="cpu", prefix_cache=False)
    return on, off


def card_scores(teacher: Qwen3RerankerTeacher, pairs: list[tuple[str, str]]) -> np.ndarray:
    """The model card's computation, one prompt at a time: unpadded, no position ids, the full ``[vocab]`` head."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(teacher.model_name_or_path).eval()
    scores = []
    with torch.no_grad():
        for ids in teacher.prompt.encode(pairs):
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
            scores.append(float(logits[teacher.yes_id] - logits[teacher.no_id]))
    return np.array(scores, dtype=np.float32)


# ---------------------------------------------------------------------------------------------------------
# the prefix/remainder split (CPU only)
# ---------------------------------------------------------------------------------------------------------


def test_common_prefix_length():
    assert common_prefix_length([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert common_prefix_length([[1, 2, 3], [1, 2, 3]]) == 3
    assert common_prefix_length([[1, 2], [1, 2, 3]]) == 2
    assert common_prefix_length([[7, 1], [1, 7]]) == 0
    assert common_prefix_length([[4, 5, 6]]) == 3
    assert common_prefix_length([]) == 0
    # min and max alone decide it: the middle sequence differs earliest from neither
    assert common_prefix_length([[1, 1, 9], [1, 2, 0], [1, 3, 0]]) == 1


def test_batch_splits_each_query_into_its_shared_prefix_and_remainders(tiny_qwen3):
    from transformers import AutoTokenizer

    prompt = Qwen3RerankerPrompt(AutoTokenizer.from_pretrained(tiny_qwen3), max_length=MAX_LENGTH)
    pairs = hard_pairs()
    ids = prompt.encode(pairs)
    batch = prompt.batch(ids, [q for q, _ in pairs])

    assert batch.size == len(pairs)
    assert batch.plain_rows.tolist() == [10]  # the one query with a single candidate runs whole
    assert batch.shared_rows.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12]
    assert batch.prefix_index.tolist() == [0] * 6 + [1] * 2 + [2] * 2 + [3] * 2
    assert torch.equal(batch.plain["input_ids"][0], torch.tensor(ids[10]))
    num_prefixes, prefix_width = batch.prefix["input_ids"].shape
    assert (
        num_prefixes == 4
        and batch.remainder["attention_mask"].shape[1] == prefix_width + batch.remainder["input_ids"].shape[1]
    )

    # Every shared prompt is exactly its prefix's real tokens followed by its remainder's, at positions 0, 1, ...
    remainder_width = batch.remainder["input_ids"].shape[1]
    for k, row in enumerate(batch.shared_rows.tolist()):
        g = int(batch.prefix_index[k])
        prefix_mask = batch.prefix["attention_mask"][g].bool()
        assert torch.equal(batch.remainder["attention_mask"][k, :prefix_width].bool(), prefix_mask)
        tail_mask = batch.remainder["attention_mask"][k, prefix_width:].bool()
        prefix_ids = batch.prefix["input_ids"][g][prefix_mask].tolist()
        tail_ids = batch.remainder["input_ids"][k][tail_mask].tolist()
        assert prefix_ids + tail_ids == ids[row]
        assert tail_mask[-1]  # left padded: the last column is the answer position
        assert batch.prefix["position_ids"][g][prefix_mask].tolist() == list(range(len(prefix_ids)))
        assert batch.remainder["position_ids"][k][tail_mask].tolist() == list(range(len(prefix_ids), len(ids[row])))
        assert len(tail_ids) >= 1 and tail_mask.shape[0] == remainder_width

    # The prefix is the longest common prefix of the query's prompts: past the query, into the document's first
    # tokens when they agree; the duplicates and the two cut prompts of query 0 leave it shorter than all of them.
    lengths = batch.prefix["attention_mask"].sum(1).tolist()
    assert lengths[0] == common_prefix_length([ids[i] for i in range(6)])
    assert lengths[2] == common_prefix_length([ids[8], ids[9]])
    # Identical prompts (cut at max_length) still leave their last token to the remainder.
    assert ids[11] == ids[12] and lengths[3] == len(ids[11]) - 1
    tail = batch.remainder["attention_mask"][:, prefix_width:].sum(1).tolist()
    assert tail[-2:] == [1, 1]

    # Token counts: the prefixes run once instead of once per candidate.
    counts = batch.token_counts()
    whole = prompt.batch(ids).token_counts()
    assert whole["real"] == sum(len(x) for x in ids)
    assert counts["real"] == whole["real"] - sum(lengths[g] for g in batch.prefix_index.tolist()) + sum(lengths)


def test_batch_runs_short_common_prefixes_and_groupless_prompts_whole(tiny_qwen3):
    from transformers import AutoTokenizer

    prompt = Qwen3RerankerPrompt(AutoTokenizer.from_pretrained(tiny_qwen3), max_length=MAX_LENGTH)
    ids = prompt.encode([("a query", "one document"), ("a query", "another document")])
    shared = prompt.lengths([("a query", "one document")])[0]
    # min_prefix_length above the common prefix: both run whole; no groups: everything runs whole.
    for batch in (prompt.batch(ids, ["q", "q"], min_prefix_length=shared), prompt.batch(ids)):
        assert batch.prefix is None and batch.plain_rows.tolist() == [0, 1]
        assert torch.equal(batch.plain["input_ids"], prompt.pad(ids)["input_ids"])
    assert prompt.batch(ids, ["q", "q"]).plain is None
    empty = prompt.batch([], [])
    assert empty.size == 0 and empty.plain is None and empty.prefix is None


def test_prepare_batch_is_cpu_only_thread_safe_and_leaves_the_model_alone(tiny_qwen3):
    teacher = Qwen3RerankerTeacher(tiny_qwen3, max_length=MAX_LENGTH, device="cpu")
    pairs = hard_pairs()
    with ThreadPoolExecutor(max_workers=4) as pool:
        batches = list(pool.map(teacher.prepare_batch, [pairs] * 8))
    assert teacher._model is None  # no model load, no model call
    first = batches[0]
    assert isinstance(first, RerankerBatch)
    for batch in batches[1:]:
        for inputs in ("plain", "prefix", "remainder"):
            for key, tensor in getattr(first, inputs).items():
                assert torch.equal(getattr(batch, inputs)[key], tensor)


def test_prefix_cache_changes_neither_the_fingerprint_nor_lengths_but_the_batching(teachers):
    on, off = teachers
    assert on.prefix_cache and not off.prefix_cache
    assert on.batches_by_query is True and off.batches_by_query is False
    assert on.fingerprint() == off.fingerprint()
    assert on.lengths(hard_pairs()) == off.lengths(hard_pairs())
    assert off.prepare_batch(hard_pairs()).prefix is None


# ---------------------------------------------------------------------------------------------------------
# scores: prefix path == plain path == the model card's computation
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [13, 5, 2])
def test_prefix_scores_equal_the_plain_path_and_the_model_card(teachers, batch_size):
    on, off = teachers
    pairs = hard_pairs()
    batches = query_batches(pairs, on.lengths(pairs), batch_size)
    prefix_scores = np.zeros(len(pairs), dtype=np.float32)
    plain_scores = np.zeros(len(pairs), dtype=np.float32)
    used_prefixes = 0
    for rows in batches:
        items = [pairs[i] for i in rows]
        prepared = on.prepare_batch(items)
        used_prefixes += 0 if prepared.prefix is None else prepared.prefix["input_ids"].shape[0]
        values = on.run_batch(prepared)
        assert values.shape == (len(rows), 1) and values.dtype == np.float32
        prefix_scores[rows] = values[:, 0]
        plain_scores[rows] = off.score_batch(items)[:, 0]
    assert used_prefixes >= 3  # the shared path ran (a batch of 2 still shares a query's pair)

    reference = card_scores(on, pairs)
    np.testing.assert_allclose(prefix_scores, plain_scores, rtol=0, atol=1e-4)
    np.testing.assert_allclose(prefix_scores, reference, rtol=0, atol=1e-4)
    assert np.std(reference) > 0.1  # the scores compared differ from one prompt to another
    assert prefix_scores[0] == pytest.approx(prefix_scores[5], abs=1e-5)  # duplicates
    assert prefix_scores[3] == pytest.approx(prefix_scores[4], abs=1e-5)  # the same once cut


def test_a_wrong_remainder_position_is_caught(teachers, monkeypatch):
    """The comparison above has the power to catch a wrong prefix path: positions off by one change the scores."""
    on, _ = teachers
    pairs = hard_pairs()[:6]
    reference = card_scores(on, pairs)
    original = Qwen3RerankerPrompt.batch

    def shifted(self, *args, **kwargs):
        batch = original(self, *args, **kwargs)
        batch.remainder["position_ids"] = batch.remainder["position_ids"] + 1
        return batch

    monkeypatch.setattr(Qwen3RerankerPrompt, "batch", shifted)
    assert np.abs(on.score_batch(pairs)[:, 0] - reference).max() > 1e-3


def test_prefix_scores_through_the_runner(teachers):
    on, off = teachers
    rows: dict[str, list[str]] = {}
    for query, passage in hard_pairs():
        rows.setdefault(query, []).append(passage)
    groups = [RankingGroup(query, passages, None, [0] * len(passages)) for query, passages in rows.items()]
    for budget in (400, 100_000):  # several batches, then one
        with_prefix = score_groups(on, groups, max_tokens_per_batch=budget, progress=False)
        plain = score_groups(off, groups, max_tokens_per_batch=budget, progress=False)
        for a, b in zip(with_prefix, plain):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)


def test_an_empty_batch_scores_nothing(teachers):
    on, _ = teachers
    assert on.score_batch([]).shape == (0, 1)


def test_a_model_with_sliding_window_layers_runs_prompts_whole(tmp_path):
    """A sliding window counts cache positions, and a left-padded prefix puts pads between prefix and remainder:
    such a model scores every prompt whole, whatever prefix_cache asks, and still gets the card's scores."""
    from transformers import Qwen3ForCausalLM

    path = tmp_path / "sliding"
    tokenizer = build_tiny_qwen3_tokenizer(path)
    config = tiny_qwen3_config(
        tokenizer,
        num_hidden_layers=3,
        use_sliding_window=True,
        sliding_window=24,
        max_window_layers=1,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        bos_token_id=None,
    )
    assert "sliding_attention" in config.layer_types and "full_attention" in config.layer_types
    torch.manual_seed(1)
    Qwen3ForCausalLM(config).eval().save_pretrained(path)
    teacher = Qwen3RerankerTeacher(str(path), max_length=MAX_LENGTH, device="cpu")
    assert not teacher.prefix_cache and not teacher.batches_by_query
    pairs = hard_pairs()[:10]
    assert teacher.prepare_batch(pairs).prefix is None
    np.testing.assert_allclose(teacher.score_batch(pairs)[:, 0], card_scores(teacher, pairs), rtol=0, atol=1e-4)


def test_the_full_attention_check_reads_the_checkpoint_config(tiny_qwen3):
    teacher = Qwen3RerankerTeacher(tiny_qwen3, max_length=MAX_LENGTH, device="cpu")
    assert teacher._full_attention_only() and teacher.prefix_cache
