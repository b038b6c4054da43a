"""Tests for hf_distill.data: every row format read into the same groups, and every error pointing at its place."""

import json
import logging
import os
import subprocess
import sys
import textwrap

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never touch the network from tests

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hf_distill import data
from hf_distill.data import (
    FORMATS,
    DataFormatError,
    RankingGroup,
    build_reference_triplets,
    detect_format,
    eval_set_names,
    groups_to_dataset,
    load_ranking_dataset,
    read_groups,
    write_listwise_jsonl,
)

LISTWISE_ROWS = [
    {
        "query": "what is a cat",
        "passages": ["a cat is a feline", "dogs bark", "cats purr"],
        "scores": [4.5, -2.0, 3.25],
        "labels": [1, 0, 1],
    },
    {
        "query": "capital of France",
        "passages": ["Paris is the capital", "Lyon is a city"],
        "scores": [7.0, 0.5],
        "labels": [1, 0],
    },
]
EXPECTED_GROUPS = [
    RankingGroup("what is a cat", ["a cat is a feline", "dogs bark", "cats purr"], [4.5, -2.0, 3.25], [1, 0, 1]),
    RankingGroup("capital of France", ["Paris is the capital", "Lyon is a city"], [7.0, 0.5], [1, 0]),
]


def write_lines(path, lines):
    """Write raw text lines (not rows), so tests can put exactly what they want on each line."""
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_rows(path, rows):
    return write_lines(path, [json.dumps(row) for row in rows])


# --- reading every source kind -------------------------------------------------------------------------------


def _as_jsonl(tmp_path, rows):
    return write_rows(tmp_path / "scores.jsonl", rows)


def _as_json_array(tmp_path, rows):
    path = tmp_path / "scores.json"
    path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return path


def _as_json_lines_in_json(tmp_path, rows):
    return write_rows(tmp_path / "scores.json", rows)


def _as_parquet(tmp_path, rows):
    path = tmp_path / "scores.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _as_saved_dataset(tmp_path, rows):
    path = tmp_path / "scores_dataset"
    datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return path


def _as_saved_dataset_dict(tmp_path, rows):
    path = tmp_path / "scores_dataset_dict"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(path))
    return path


@pytest.mark.parametrize(
    "write", [_as_jsonl, _as_json_array, _as_json_lines_in_json, _as_parquet, _as_saved_dataset, _as_saved_dataset_dict]
)
def test_every_source_kind_reads_into_the_same_groups(tmp_path, write):
    path = write(tmp_path, LISTWISE_ROWS)
    assert read_groups(path) == EXPECTED_GROUPS


def test_hub_dataset_name_is_loaded_with_load_dataset(monkeypatch):
    calls = []

    def fake_load_dataset(name, split):
        calls.append((name, split))
        return datasets.Dataset.from_list(LISTWISE_ROWS)

    monkeypatch.setattr(data.datasets, "load_dataset", fake_load_dataset)
    assert read_groups("someone/reranker-scores", split="validation") == EXPECTED_GROUPS
    assert calls == [("someone/reranker-scores", "validation")]


def test_blank_lines_are_skipped_and_line_numbers_still_count_them(tmp_path):
    bad_row = '{"query": 3, "passages": ["x"], "scores": [1]}'
    path = write_lines(tmp_path / "gaps.jsonl", [json.dumps(LISTWISE_ROWS[0]), "", "   ", bad_row])
    with pytest.raises(DataFormatError, match=r"gaps\.jsonl:4: field 'query'"):
        read_groups(path)


# --- the other row formats -----------------------------------------------------------------------------------


def test_pointwise_rows_are_grouped_by_query_in_first_seen_order(tmp_path):
    path = write_rows(
        tmp_path / "pointwise.jsonl",
        [
            {"query": "q2", "passage": "b", "score": 1.0, "label": 1},
            {"query": "q1", "passage": "x", "score": -1.0, "label": 0},
            {"query": "q2", "passage": "a", "score": 2.0, "label": 0},
        ],
    )
    assert read_groups(path) == [
        RankingGroup("q2", ["b", "a"], [1.0, 2.0], [1, 0]),
        RankingGroup("q1", ["x"], [-1.0], [0]),
    ]


def test_pointwise_score_given_for_some_rows_of_a_query_only_is_an_error(tmp_path):
    path = write_rows(
        tmp_path / "pointwise.jsonl",
        [{"query": "q", "passage": "a", "score": 1.0}, {"query": "q", "passage": "b"}],
    )
    with pytest.raises(DataFormatError, match=r"pointwise\.jsonl:2: field 'score': missing here but given on line 1"):
        read_groups(path, require_scores=False)


def test_pairwise_margin_rows_keep_the_margin_and_label_positive_first(tmp_path):
    path = write_rows(tmp_path / "pairs.jsonl", [{"query": "q", "positive": "good", "negative": "bad", "score": 3.5}])
    (group,) = read_groups(path)
    assert group == RankingGroup("q", ["good", "bad"], [3.5, 0.0], [1, 0])
    assert group.scores[0] - group.scores[1] == 3.5  # only the margin is meaningful


def test_pairwise_rows_with_both_scores_keep_both(tmp_path):
    path = write_rows(
        tmp_path / "pairs.jsonl",
        [{"query": "q", "positive": "good", "negative": "bad", "positive_score": 2.0, "negative_score": -1.5}],
    )
    assert read_groups(path) == [RankingGroup("q", ["good", "bad"], [2.0, -1.5], [1, 0])]


def test_mteb_rows_have_no_scores_and_say_to_run_teacher_scoring(tmp_path):
    path = write_rows(tmp_path / "mteb.jsonl", [{"query": "q", "positive": ["p1"], "negative": ["n1", "n2"]}])
    with pytest.raises(DataFormatError) as err:
        read_groups(path)
    message = str(err.value)
    assert "mteb.jsonl:1: field 'scores'" in message and "no teacher scores" in message
    assert "recipes/score_teacher.py" in message
    assert read_groups(path, require_scores=False) == [RankingGroup("q", ["p1", "n1", "n2"], None, [1, 0, 0])]


def test_flagembedding_rows_take_labels_from_pos_and_neg(tmp_path):
    path = write_rows(
        tmp_path / "flag.jsonl",
        [{"query": "q", "pos": ["p"], "neg": ["n1", "n2"], "pos_scores": [5.0], "neg_scores": [1.0, -1.0], "id": 7}],
    )
    assert read_groups(path) == [RankingGroup("q", ["p", "n1", "n2"], [5.0, 1.0, -1.0], [1, 0, 0])]


@pytest.mark.parametrize(
    "row, expected",
    [
        ({"query": "q", "passages": ["a"], "scores": [1.0]}, "listwise"),
        ({"query": "q", "passage": "a", "score": 1.0}, "pointwise"),
        ({"query": "q", "positive": "a", "negative": "b", "score": 1.0}, "pairwise"),
        ({"query": "q", "positive": ["a"], "negative": ["b"]}, "mteb"),
        ({"query": "q", "pos": ["a"], "neg": ["b"], "pos_scores": [1.0], "neg_scores": [0.0]}, "flagembedding"),
    ],
)
def test_detect_format_from_the_row_keys(row, expected):
    assert detect_format(row) == expected
    assert expected in FORMATS


def test_unknown_keys_list_every_accepted_format(tmp_path):
    path = write_rows(tmp_path / "odd.jsonl", [{"question": "q", "docs": ["a"]}])
    with pytest.raises(DataFormatError, match=r"odd\.jsonl:1: cannot tell the format") as err:
        read_groups(path)
    assert all(name in str(err.value) for name in FORMATS)


def test_named_format_is_used_and_an_unknown_name_lists_the_accepted_ones(tmp_path):
    path = _as_jsonl(tmp_path, LISTWISE_ROWS)
    assert read_groups(path, format="listwise") == EXPECTED_GROUPS
    with pytest.raises(DataFormatError, match=r"field 'format': unknown format 'listwize'.*listwise, pointwise"):
        read_groups(path, format="listwize")


def test_a_row_in_another_format_names_its_line(tmp_path):
    path = write_rows(tmp_path / "mixed.jsonl", LISTWISE_ROWS + [{"query": "q", "passage": "a", "score": 1.0}])
    with pytest.raises(DataFormatError) as err:
        read_groups(path)
    assert "mixed.jsonl:3: field 'passages': is missing; this row looks like pointwise" in str(err.value)


# --- validation errors: file, line, field and a fix ----------------------------------------------------------

GOOD = json.dumps(LISTWISE_ROWS[0])


@pytest.mark.parametrize(
    "bad_line, field, problem",
    [
        ('{"query": "q", "passages": ["a"], "scores": [1.0}', None, "not valid JSON"),
        ('{"query": "q", "passages": ["a", "b"]}', "scores", "is missing"),
        ('{"passages": ["a"], "scores": [1.0]}', "query", "is missing"),
        ('{"query": 42, "passages": ["a"], "scores": [1.0]}', "query", "expected a string, got int"),
        ('{"query": "  ", "passages": ["a"], "scores": [1.0]}', "query", "is an empty string"),
        ('{"query": "q", "passages": "a", "scores": [1.0]}', "passages", "expected a list of strings"),
        ('{"query": "q", "passages": ["a", 7], "scores": [1.0, 2.0]}', "passages", "item 1 is int"),
        ('{"query": "q", "passages": [], "scores": []}', "passages", "has no candidates"),
        ('{"query": "q", "passages": ["a"], "scores": 1.0}', "scores", "expected a list of numbers"),
        ('{"query": "q", "passages": ["a"], "scores": ["1.0"]}', "scores", "item 0 is str"),
        ('{"query": "q", "passages": ["a"], "scores": [true]}', "scores", "item 0 is bool"),
        ('{"query": "q", "passages": ["a", "b"], "scores": [1.0, NaN]}', "scores", "item 1 is nan"),
        ('{"query": "q", "passages": ["a"], "scores": [-Infinity]}', "scores", "item 0 is -inf"),
        ('{"query": "q", "passages": ["a"], "scores": [1e400]}', "scores", "item 0 is inf"),
        ('{"query": "q", "passages": ["a", "b"], "scores": [1.0]}', "scores", "has 1 values but 'passages' has 2"),
        ('{"query": "q", "passages": ["a"], "scores": [1.0], "labels": [1, 0]}', "labels", "has 2 values but"),
        ('{"query": "q", "passages": ["a"], "scores": [1.0], "labels": [2]}', "labels", "labels must be 1, 0 or -1"),
        ('{"query": "q", "passages": ["a"], "scores": [1e30]}', "scores", "item 0 is 1e+30; its square overflows"),
        ('{"query": "q", "passages": ["a", "b"], "scores": [1.0, -2e19]}', "scores", "item 1 is -2e+19; its square"),
        ('["q", ["a"], [1.0]]', None, "expected a JSON object, got list"),
    ],
)
def test_each_invalid_row_raises_one_error_naming_file_line_and_field(tmp_path, bad_line, field, problem):
    path = write_lines(tmp_path / "teacher_scores.jsonl", [GOOD, bad_line, GOOD])
    with pytest.raises(DataFormatError) as err:
        read_groups(path)
    message = str(err.value)
    where = f"{path}:2:" + (f" field '{field}':" if field else "")
    assert message.startswith(where), message
    assert problem in message and "Fix: " in message


def test_nan_score_in_pointwise_row_is_rejected(tmp_path):
    path = write_lines(tmp_path / "pw.jsonl", ['{"query": "q", "passage": "a", "score": NaN}'])
    with pytest.raises(DataFormatError, match=r"pw\.jsonl:1: field 'score': is nan; teacher scores must be finite"):
        read_groups(path)


def test_non_utf8_bytes_name_their_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    lines = [GOOD.encode(), GOOD.encode(), '{"query": "café", "passages": ["a"], "scores": [1.0]}'.encode("latin-1")]
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(DataFormatError, match=r"latin1\.jsonl:3: bytes are not valid UTF-8.*iconv"):
        read_groups(path)


def test_non_utf8_bytes_in_a_json_array_name_their_line(tmp_path):
    path = tmp_path / "array.json"
    path.write_bytes(b'[\n {"query": "a", "passages": ["x"], "scores": [1]},\n {"query": "caf\xe9"}\n]\n')
    with pytest.raises(DataFormatError, match=r"array\.json:3: bytes are not valid UTF-8"):
        read_groups(path)


def test_json_array_errors_name_the_line_the_row_starts_on(tmp_path):
    path = write_lines(
        tmp_path / "scores.json",
        [
            "[",
            '  {"query": "q1", "passages": ["a"], "scores": [1.0]},',
            "  {",
            '    "query": "q2",',
            '    "passages": ["a", "b"],',
            '    "scores": [1.0]',
            "  }",
            "]",
        ],
    )
    with pytest.raises(DataFormatError, match=r"scores\.json:3: field 'scores': has 1 values"):
        read_groups(path)


def test_parquet_errors_name_the_row_index(tmp_path):
    rows = LISTWISE_ROWS + [{"query": "", "passages": ["a"], "scores": [1.0], "labels": [1]}]
    path = _as_parquet(tmp_path, rows)
    with pytest.raises(DataFormatError, match=r"scores\.parquet:row 2: field 'query': is an empty string"):
        read_groups(path)


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file_is_an_error(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_text(content)
    with pytest.raises(DataFormatError, match=r"empty\.jsonl: has no rows\. Fix: "):
        read_groups(path)


def test_missing_file_suggests_checking_the_path(tmp_path):
    with pytest.raises(DataFormatError, match=r"nope\.jsonl: no such file or directory\. Fix: check the path"):
        read_groups(tmp_path / "nope.jsonl")


# --- datasets, filtering, writing ----------------------------------------------------------------------------


def test_groups_to_dataset_fills_unscored_with_zeros_and_unknown_labels_with_minus_one():
    dataset = groups_to_dataset([EXPECTED_GROUPS[1], RankingGroup("q", ["a", "b", "c"])])
    assert dataset.column_names == ["query", "passages", "scores", "labels"]
    assert dataset.features["scores"].feature.dtype == "float32"
    assert dataset[0] == LISTWISE_ROWS[1]
    assert dataset[1]["scores"] == [0.0, 0.0, 0.0] and dataset[1]["labels"] == [-1, -1, -1]


def test_min_candidates_drops_short_groups_with_one_warning_that_counts_them(tmp_path, caplog):
    rows = LISTWISE_ROWS + [{"query": "tiny", "passages": ["only one"], "scores": [0.0]}]
    path = _as_jsonl(tmp_path, rows)
    with caplog.at_level(logging.WARNING, logger="hf_distill"):
        dataset = load_ranking_dataset(path, min_candidates=3)
    assert dataset["query"] == ["what is a cat"]
    warnings = [record for record in caplog.records if record.name == "hf_distill"]
    assert len(warnings) == 1
    assert "dropped 2 of 3 groups with fewer than min_candidates=3" in warnings[0].getMessage()


def test_min_candidates_leaving_nothing_is_an_error(tmp_path):
    path = _as_jsonl(tmp_path, LISTWISE_ROWS)
    with pytest.raises(DataFormatError, match=r"all 2 groups have fewer than min_candidates=10"):
        load_ranking_dataset(path, min_candidates=10)


def test_write_then_read_round_trips_exactly_and_leaves_no_temp_file(tmp_path):
    groups = EXPECTED_GROUPS + [RankingGroup("naïve café", ["über", "日本"], [0.1 + 0.2, -1e-7], None)]
    path = write_listwise_jsonl(groups, tmp_path / "out" / "scores.jsonl")
    assert read_groups(path) == groups  # floats come back bit-identical
    assert "naïve café" in path.read_text(encoding="utf-8")  # ensure_ascii=False
    assert os.listdir(path.parent) == ["scores.jsonl"]


def test_write_refuses_invalid_groups_and_keeps_the_old_file(tmp_path):
    path = write_listwise_jsonl(EXPECTED_GROUPS, tmp_path / "scores.jsonl")
    before = path.read_text()
    with pytest.raises(DataFormatError, match=r"<groups>:group 1: field 'scores': item 0 is nan"):
        write_listwise_jsonl([EXPECTED_GROUPS[0], RankingGroup("q", ["a"], [float("nan")])], path)
    assert path.read_text() == before and os.listdir(tmp_path) == ["scores.jsonl"]


# --- the reference triplet builder --------------------------------------------------------------------------


def test_reference_triplets_pair_top_8_with_the_next_4():
    # Scores in shuffled order so the builder must sort: passage "pK" has teacher score K.
    order = [5, 11, 0, 7, 3, 9, 1, 10, 2, 8, 6, 4]
    group = RankingGroup("q", [f"p{k}" for k in order], [float(k) for k in order])
    triplets = build_reference_triplets([group], top_k=8, num_negatives=4)
    assert len(triplets) == 8 * 4
    assert {t["positive"] for t in triplets} == {f"p{k}" for k in range(4, 12)}  # the top 8
    assert {t["negative"] for t in triplets} == {f"p{k}" for k in range(0, 4)}  # ranks 9..12
    for t in triplets:
        assert t["score"] == t["positive_score"] - t["negative_score"] > 0
        assert t["positive"] == f"p{int(t['positive_score'])}" and t["query"] == "q"


def test_reference_triplets_shrink_top_k_for_short_groups_and_skip_singletons():
    short = RankingGroup("short", ["a", "b", "c"], [3.0, 1.0, 2.0])
    single = RankingGroup("single", ["a"], [1.0])
    triplets = build_reference_triplets([short, single], top_k=8, num_negatives=4)
    # top_k shrinks to 2 so one negative remains: (a, b) and (c, b).
    assert [(t["positive"], t["negative"], t["score"]) for t in triplets] == [("a", "b", 2.0), ("c", "b", 1.0)]


def test_reference_triplets_need_teacher_scores():
    with pytest.raises(DataFormatError, match=r"group 0: field 'scores'.*score_teacher"):
        build_reference_triplets([RankingGroup("q", ["a", "b"])])


# --- finding #15: passages, duplicates, unknown labels, huge scores ------------------------------------------


def hf_distill_warnings(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "hf_distill"]


@pytest.mark.parametrize(
    "row, field",
    [
        ({"query": "q", "passages": ["a", " \t"], "scores": [1.0, 2.0]}, "passages[1]"),
        ({"query": "q", "passages": [""], "scores": [1.0]}, "passages[0]"),
        ({"query": "q", "passage": "  ", "score": 1.0}, "passage"),
        ({"query": "q", "positive": "a", "negative": "", "score": 1.0}, "negative"),
        ({"query": "q", "positive": ["a"], "negative": ["b", "\n"]}, "negative[1]"),
        ({"query": "q", "pos": [""], "neg": ["b"], "pos_scores": [1.0], "neg_scores": [0.0]}, "pos[0]"),
    ],
)
def test_empty_or_whitespace_passages_are_rejected_in_every_format(tmp_path, row, field):
    path = write_rows(tmp_path / "blank.jsonl", [row])
    with pytest.raises(DataFormatError) as err:
        read_groups(path, require_scores=False)
    message = str(err.value)
    assert message.startswith(f"{path}:1: field '{field}': is "), message
    assert "empty" in message and "Fix: " in message and "\n" not in message


def test_in_memory_groups_with_an_empty_passage_are_rejected():
    with pytest.raises(DataFormatError, match=r"<groups>:group 0: field 'passages\[1\]': is .*empty"):
        groups_to_dataset([RankingGroup("q", ["a", "   "], [1.0, 2.0])])


def test_duplicate_passages_with_equal_labels_keep_the_first_and_warn_once_per_file(tmp_path, caplog):
    rows = [
        {
            "query": "q1",
            "passages": ["a", "b", "a", "b", "c"],
            "scores": [1.0, 2.0, 3.0, 2.0, 5.0],
            "labels": [1, 0, 1, 0, 0],
        },
        {"query": "q2", "passages": ["x", "x"], "scores": [1.0, 1.0]},  # no labels
        # unknown first, then 1: the kept copy takes the known label
        {"query": "q3", "passages": ["u", "v", "u"], "scores": [0.5, 0.0, 0.7], "labels": [-1, 0, 1]},
    ]
    path = write_rows(tmp_path / "dups.jsonl", rows)
    with caplog.at_level(logging.WARNING, logger="hf_distill"):
        groups = read_groups(path)
    assert groups == [
        RankingGroup("q1", ["a", "b", "c"], [1.0, 2.0, 5.0], [1, 0, 0]),  # the first score wins (1.0, not 3.0)
        RankingGroup("q2", ["x"], [1.0], None),
        RankingGroup("q3", ["u", "v"], [0.5, 0.0], [1, 0]),  # a known label replaces the unknown one
    ]
    (message,) = hf_distill_warnings(caplog)
    assert str(path) in message and "dropped 4 duplicate passages" in message


def test_pointwise_duplicate_rows_keep_the_first(tmp_path, caplog):
    rows = [
        {"query": "q", "passage": "a", "score": 1.0, "label": 1},
        {"query": "q", "passage": "b", "score": 0.0, "label": 0},
        {"query": "q", "passage": "a", "score": 9.0, "label": 1},
    ]
    path = write_rows(tmp_path / "pw.jsonl", rows)
    with caplog.at_level(logging.WARNING, logger="hf_distill"):
        assert read_groups(path) == [RankingGroup("q", ["a", "b"], [1.0, 0.0], [1, 0])]
    (message,) = hf_distill_warnings(caplog)
    assert "dropped 1 duplicate passage" in message


def test_no_duplicates_no_warning(tmp_path, caplog):
    path = _as_jsonl(tmp_path, LISTWISE_ROWS)
    with caplog.at_level(logging.WARNING, logger="hf_distill"):
        read_groups(path)
    assert hf_distill_warnings(caplog) == []


@pytest.mark.parametrize(
    "rows, place, field, first",
    [
        (
            [{"query": "q", "passages": ["a", "b", "a"], "scores": [1, 2, 3], "labels": [1, 0, 0]}],
            "1",
            "passages[2]",
            "passages[0]",
        ),
        (
            [{"query": "q", "pos": ["a"], "neg": ["b", "a"], "pos_scores": [1], "neg_scores": [0, 0]}],
            "1",
            "neg[1]",
            "pos[0]",
        ),
        ([{"query": "q", "positive": ["a", "b"], "negative": ["b"]}], "1", "negative[0]", "positive[1]"),
        ([{"query": "q", "positive": "a", "negative": "a", "score": 1.0}], "1", "negative", "positive"),
        (
            [
                {"query": "q", "passage": "a", "score": 1.0, "label": 0},
                {"query": "q", "passage": "a", "score": 1.0, "label": 1},
            ],
            "2",
            "passage",
            "line 1",
        ),
    ],
)
def test_duplicate_passage_with_conflicting_labels_is_an_error(tmp_path, rows, place, field, first):
    path = write_rows(tmp_path / "conflict.jsonl", rows)
    with pytest.raises(DataFormatError) as err:
        read_groups(path, require_scores=False)
    message = str(err.value)
    assert message.startswith(f"{path}:{place}: field '{field}': "), message
    assert first in message and "Fix: " in message


def test_in_memory_group_with_conflicting_duplicate_labels_is_rejected():
    with pytest.raises(DataFormatError, match=r"group 0: field 'passages\[1\]'.*passages\[0\]"):
        groups_to_dataset([RankingGroup("q", ["a", "a"], [1.0, 1.0], [1, 0])])


def test_label_minus_one_means_unknown_in_every_labelled_format(tmp_path):
    row = {"query": "q", "passages": ["a", "b", "c"], "scores": [3, 2, 1], "labels": [1, -1, 0]}
    listwise = write_rows(tmp_path / "lw.jsonl", [row])
    pointwise = write_rows(tmp_path / "pw.jsonl", [{"query": "q", "passage": "a", "score": 1.0, "label": -1}])
    assert read_groups(listwise) == [RankingGroup("q", ["a", "b", "c"], [3.0, 2.0, 1.0], [1, -1, 0])]
    assert read_groups(pointwise) == [RankingGroup("q", ["a"], [1.0], [-1])]
    assert load_ranking_dataset(listwise)[0]["labels"] == [1, -1, 0]


def test_huge_scores_warn_once_per_file_and_overflowing_ones_are_rejected(tmp_path, caplog):
    rows = [
        {"query": "q1", "passages": ["a", "b"], "scores": [2e4, -3e4]},
        {"query": "q2", "passages": ["a", "b"], "scores": [1.5e19, 1.0]},  # square still fits in float32
    ]
    path = write_rows(tmp_path / "huge.jsonl", rows)
    with caplog.at_level(logging.WARNING, logger="hf_distill"):
        assert read_groups(path)[1].scores == [1.5e19, 1.0]
    (message,) = hf_distill_warnings(caplog)
    assert str(path) in message and "3 teacher scores" in message and "1e4" in message

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hf_distill"):
        read_groups(_as_jsonl(tmp_path, LISTWISE_ROWS))
    assert hf_distill_warnings(caplog) == []


# --- Hub datasets from the huggingface_hub cache, offline -----------------------------------------------------

_HUB_CHECK = textwrap.dedent(
    """
    import json, sys
    from hf_distill.data import DataFormatError, read_groups
    out = {}
    groups = read_groups("someorg/tiny-reranking", split="test")
    out["groups"] = [[g.query, g.passages, g.scores, g.labels] for g in groups]
    try:
        read_groups("someorg/not-cached", split="test")
    except DataFormatError as err:
        out["error"] = str(err)
    print(json.dumps(out))
    """
)


def test_hub_dataset_in_the_huggingface_hub_cache_loads_offline(tmp_path):
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf_home" / "hub" / "datasets--someorg--tiny-reranking"
    snapshot = repo / "snapshots" / sha / "data"
    snapshot.mkdir(parents=True)
    write_rows(snapshot / "test-00000-of-00001.jsonl", LISTWISE_ROWS)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    env = {
        **os.environ,
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(data.__file__))),
    }
    env.pop("HF_HUB_CACHE", None), env.pop("HF_DATASETS_CACHE", None), env.pop("HUGGINGFACE_HUB_CACHE", None)
    result = subprocess.run(
        [sys.executable, "-c", _HUB_CHECK], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["groups"] == [[g.query, g.passages, g.scores, g.labels] for g in EXPECTED_GROUPS]
    # Neither load_dataset nor the hub cache has it: one error naming both attempts and the fix.
    assert out["error"].startswith("someorg/not-cached: "), out["error"]
    assert "load_dataset" in out["error"] and "snapshot_download" in out["error"] and "Fix: " in out["error"]
    assert "hf download --repo-type dataset someorg/not-cached" in out["error"]


# --- eval-set names (finding #1) ------------------------------------------------------------------------------

SEED_EVAL_FILES = [
    "data/stackoverflowdupquestions/test_scored.jsonl",
    "data/askubuntudupquestions/test_scored.jsonl",
    "data/scidocs/test_scored.jsonl",
]


def test_eval_set_names_of_the_seed_configs_are_unique_and_keep_order():
    names = eval_set_names(SEED_EVAL_FILES)
    assert list(names.items()) == [
        ("stackoverflowdupquestions_test_scored", SEED_EVAL_FILES[0]),
        ("askubuntudupquestions_test_scored", SEED_EVAL_FILES[1]),
        ("scidocs_test_scored", SEED_EVAL_FILES[2]),
    ]


def test_eval_set_names_use_the_stem_when_unique_and_explicit_names_when_given():
    names = eval_set_names(
        [
            "in_domain=data/so/test_scored.jsonl",
            "data/x/dev.parquet",
            "mteb/scidocs-reranking",
            "data/saved_dir/",
            "ood=mteb/x",
        ]
    )
    assert names == {
        "in_domain": "data/so/test_scored.jsonl",
        "dev": "data/x/dev.parquet",
        "scidocs-reranking": "mteb/scidocs-reranking",
        "saved_dir": "data/saved_dir/",
        "ood": "mteb/x",
    }
    assert list(names) == ["in_domain", "dev", "scidocs-reranking", "saved_dir", "ood"]


def test_eval_set_names_only_rename_the_colliding_stems_and_keep_equals_signs_inside_paths():
    names = eval_set_names(["a/test.jsonl", "b/test.jsonl", "c/other.jsonl", "data/k=v/dev.jsonl"])
    assert names == {
        "a_test": "a/test.jsonl",
        "b_test": "b/test.jsonl",
        "other": "c/other.jsonl",
        "dev": "data/k=v/dev.jsonl",
    }


def test_eval_set_names_are_safe_metric_prefixes():
    names = eval_set_names(["my set:v1=data/a.jsonl", "data/dev (copy).jsonl"])
    assert list(names) == ["my_set_v1", "dev__copy_"]
    assert names["my_set_v1"] == "data/a.jsonl"


@pytest.mark.parametrize(
    "paths, first, second",
    [
        (["data/x/test.jsonl", "data/x/test.jsonl"], "data/x/test.jsonl", "data/x/test.jsonl"),
        (["one/x/test.jsonl", "two/x/test.jsonl"], "one/x/test.jsonl", "two/x/test.jsonl"),
        (["dev=a.jsonl", "dev=b.jsonl"], "a.jsonl", "b.jsonl"),
        (["dev=a.jsonl", "data/dev.jsonl"], "a.jsonl", "data/dev.jsonl"),
    ],
)
def test_eval_set_name_collisions_name_both_paths_and_the_fix(paths, first, second):
    with pytest.raises(ValueError) as err:
        eval_set_names(paths)
    message = str(err.value)
    assert first in message and second in message and "name=path" in message and "\n" not in message


def test_eval_set_name_must_not_be_empty():
    with pytest.raises(ValueError, match=r"empty.*name=path"):
        eval_set_names(["=data/a.jsonl"])


def test_training_file_is_streamed_into_a_memory_mapped_arrow_file(tmp_path, monkeypatch):
    """A million queries must cost disk, not RAM on every rank (benchmarks/training_data_memory.py measures it)."""
    import json as _json
    import os as _os

    from hf_distill.data import load_ranking_dataset, read_groups

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "train.jsonl"
    rows = [
        {"query": f"q{i}", "passages": [f"a{i}", f"b{i}"], "scores": [1.0, float(i)], "labels": [1, 0]}
        for i in range(5)
    ]
    path.write_text("".join(_json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    dataset = load_ranking_dataset(path)
    assert dataset.cache_files and dataset.cache_files[0]["filename"].endswith(".arrow")  # memory-mapped
    assert [row["query"] for row in dataset] == [group.query for group in read_groups(path)]
    assert dataset[4]["scores"] == [1.0, 4.0] and dataset[4]["labels"] == [1, 0]
    # An edited file is read again, not served from the cache.
    rows[4]["scores"] = [1.0, 40.0]
    path.write_text("".join(_json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    _os.utime(path, ns=(1, 1))
    assert load_ranking_dataset(path)[4]["scores"] == [1.0, 40.0]
    # A new reader (another hf_distill version) reads the file again instead of trusting the old rows.
    import hf_distill.data as data_module

    cached = load_ranking_dataset(path).cache_files[0]["filename"]
    monkeypatch.setattr(data_module, "_READER_VERSION", "another-version")
    assert load_ranking_dataset(path).cache_files[0]["filename"] != cached
