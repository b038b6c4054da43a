"""Tests for hf_distill.data: every row format read into the same groups, and every error pointing at its place."""

import json
import logging
import os

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
        ('{"query": "q", "passages": ["a"], "scores": [1.0], "labels": [2]}', "labels", "labels must be 0 or 1"),
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
