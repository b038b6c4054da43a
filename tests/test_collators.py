"""The collators flatten B groups once: unique items, length-sorted micro-batches, indices back to [B, N]."""

from hf_distill.collators import BiEncoderCollator, CandidateSampler, CrossEncoderCollator, split_by_length


def _rows():
    return [
        {
            "query": "list files",
            "passages": ["ls lists directory contents", "cp copies files", "a"],
            "scores": [3.0, 1.0, -2.0],
            "labels": [1, 0, 0],
        },
        {
            "query": "copy files",
            "passages": ["cp copies files", "ls lists directory contents"],
            "scores": [2.5, 0.5],
            "labels": [1, 0],
        },
    ]


def test_cross_encoder_batch_has_teacher_matrix_mask_and_labels(tokenizer):
    batch = CrossEncoderCollator(tokenizer)(_rows())
    assert batch["teacher_scores"].tolist() == [[3.0, 1.0, -2.0], [2.5, 0.5, 0.0]]
    assert batch["candidate_mask"].tolist() == [[True, True, True], [True, True, False]]
    assert batch["relevance_labels"].tolist() == [[1, 0, 0], [1, 0, -1]]
    assert batch["pair_index"][1, 2].item() == -1


def test_cross_encoder_pair_index_points_at_the_right_tokenized_pair(tokenizer):
    rows = _rows()
    batch = CrossEncoderCollator(tokenizer, micro_batch_max_tokens=40, micro_batch_overhead_tokens=0)(rows)
    flat_ids = [
        ids[mask.bool()].tolist()
        for mb in batch["micro_batches"]
        for ids, mask in zip(mb["input_ids"], mb["attention_mask"])
    ]
    for b, row in enumerate(rows):
        for n, passage in enumerate(row["passages"]):
            expected = tokenizer(row["query"], passage)["input_ids"]
            assert flat_ids[batch["pair_index"][b, n]] == expected


def test_identical_pairs_are_scored_once(tokenizer):
    row = {"query": "q", "passages": ["same text", "same text", "other"], "scores": [1.0, 1.0, 0.0]}
    batch = CrossEncoderCollator(tokenizer)([row, dict(row)])
    rows_run = sum(mb["input_ids"].shape[0] for mb in batch["micro_batches"])
    assert rows_run == 2  # 6 slots, 2 unique (query, passage) pairs
    assert batch["pair_index"][0, 0] == batch["pair_index"][0, 1] == batch["pair_index"][1, 0]


def test_bi_encoder_encodes_each_unique_text_once(tokenizer):
    batch = BiEncoderCollator(tokenizer, query_prefix="query: ")(_rows())
    texts = {
        tokenizer.decode(ids[mask.bool()], skip_special_tokens=True)
        for mb in batch["micro_batches"]
        for ids, mask in zip(mb["input_ids"], mb["attention_mask"])
    }
    # 2 prefixed queries + 3 distinct passages (two of them shared by both groups)
    assert len(texts) == 5
    assert "query : list files" in texts or "query: list files" in texts
    assert batch["query_index"].shape == (2,)
    assert batch["passage_index"][0, 0] == batch["passage_index"][1, 1]


def test_micro_batches_are_length_sorted_and_within_budget(tokenizer):
    rows = [{"query": "q", "passages": [("word " * n).strip() for n in (1, 40, 2, 38, 3, 39)], "scores": [0.0] * 6}]
    batch = CrossEncoderCollator(tokenizer, micro_batch_max_tokens=100, micro_batch_overhead_tokens=8)(rows)
    shapes = [tuple(mb["input_ids"].shape) for mb in batch["micro_batches"]]
    assert len(shapes) >= 2
    assert all(rows * length <= 100 or rows == 1 for rows, length in shapes)
    assert batch["num_real_tokens"] / batch["num_padded_tokens"] > 0.9


def test_split_by_length_trades_padding_for_forwards():
    lengths = [5, 3, 9, 9, 4, 20]
    assert split_by_length(lengths, max_tokens=1000, overhead_tokens=0) == [[1], [4], [0], [2, 3], [5]]
    assert split_by_length(lengths, max_tokens=1000, overhead_tokens=10_000) == [[1, 4, 0, 2, 3, 5]]
    for chunk in split_by_length(lengths, max_tokens=20, overhead_tokens=10_000):
        assert len(chunk) * max(lengths[i] for i in chunk) <= 20 or len(chunk) == 1


def test_sampler_keeps_positives_and_teacher_top_then_fills_at_random():
    scores = [0.1, 5.0, 0.2, 4.0, 0.3, 0.4, 3.0, 0.5]
    labels = [1, 0, 0, 0, 0, 0, 0, 0]
    sampler = CandidateSampler(group_size=4, top_fraction=0.5, seed=1)
    picks = [sampler.select(scores, labels) for _ in range(20)]
    for kept in picks:
        assert len(kept) == 4 and kept == sorted(kept)
        assert {0, 1, 3} <= set(kept)  # the positive and the teacher's top two
    assert len({tuple(k) for k in picks}) > 1  # the fourth is sampled


def test_sampler_with_no_group_size_keeps_all():
    assert CandidateSampler(group_size=None).select([1.0, 2.0, 3.0], []) == [0, 1, 2]


def test_collator_samples_down_to_group_size(tokenizer):
    row = {"query": "q", "passages": [f"passage {i}" for i in range(10)], "scores": list(map(float, range(10)))}
    batch = CrossEncoderCollator(tokenizer, group_size=4, top_fraction=1.0)([row])
    assert batch["candidate_mask"].sum() == 4
    assert sorted(batch["teacher_scores"][0].tolist()) == [6.0, 7.0, 8.0, 9.0]


def test_left_padding_tokenizer_pads_on_the_left(tokenizer):
    import copy

    left = copy.deepcopy(tokenizer)
    left.padding_side = "left"
    rows = [{"query": "q", "passages": ["short", "a much longer passage with many words"], "scores": [0.0, 1.0]}]
    batch = CrossEncoderCollator(left, micro_batch_overhead_tokens=10_000)(rows)
    mask = batch["micro_batches"][0]["attention_mask"]
    assert mask[:, -1].all() and not mask[:, 0].all()
