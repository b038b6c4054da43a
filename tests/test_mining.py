"""hf_distill.mining and recipes/mine.py: candidate selection, the false-negative filter by hand, mining end to end
(scores equal to the teacher's own, rows the training recipes read and train on, resume), the recipe's errors and
mining rounds."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from test_retrieval import tiny_corpus_rows, tiny_query_rows, write_jsonl

from hf_distill.data import RankingGroup, read_groups
from hf_distill.evaluation import load_scorer
from hf_distill.mining import false_negative_filter, mine, select_candidates, teacher_scores_file
from hf_distill.retrieval import BM25Retriever, Corpus, Query, RetrievalResults, read_corpus, read_queries
from hf_distill.st_format import write_sentence_transformers_config
from hf_distill.teachers import score_groups

from conftest import save_tiny_checkpoint

REPO = Path(__file__).resolve().parents[1]


def _load_script():
    spec = importlib.util.spec_from_file_location("mine_recipe", REPO / "recipes" / "mine.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


mine_recipe = _load_script()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("mining")
    embedder = save_tiny_checkpoint(tokenizer, root / "embedder", "encoder", seed=5)
    write_sentence_transformers_config(embedder, pooling="mean", normalize=True, similarity="cosine", max_length=64)
    corpus_rows = tiny_corpus_rows(60, seed=2)
    query_rows = tiny_query_rows(corpus_rows, num_queries=10, seed=3)
    query_rows[-1].pop("positive_ids")  # one query without a known positive: it gets a pseudo-positive
    return {
        "root": root,
        "embedder": embedder,
        "corpus": write_jsonl(root / "corpus.jsonl", corpus_rows),
        "queries": write_jsonl(root / "queries.jsonl", query_rows),
    }


# ---------------------------------------------------------------------------------------------------------
# Selection and filter
# ---------------------------------------------------------------------------------------------------------


def test_candidates_skip_positives_repeats_padding_and_the_first_ranks():
    corpus = Corpus(["a", "b", "c", "d", "e", "f"], ["pa", "pb", "pa", "pd", "pe", "pb"])
    results = RetrievalResults(np.array([[1, 0, 2, 5, 3, 4, -1], [4, 3, -1, -1, -1, -1, -1]]), np.zeros((2, 7)))
    queries = [Query("q1", "x", ["a"]), Query("q2", "y")]
    # q1: b (rank 1), a is the positive, c repeats a's text, f repeats b's: b, d, e remain.
    assert select_candidates(results, queries, corpus, top_k=2) == [[1, 3], [4, 3]]
    assert select_candidates(results, queries, corpus, top_k=2, skip_top=1) == [[3, 4], [3]]
    assert select_candidates(results, queries, corpus, top_k=5, skip_top=3) == [[], []]


def test_false_negative_filter_by_hand():
    # Two positives (0.9, 0.6), candidates 0.7 (above the weakest positive), 0.55 (within 0.1), 0.3 (kept).
    keep, labels = false_negative_filter([0.9, 0.6, 0.7, 0.55, 0.3], num_positives=2, margin=0.1)
    assert keep.tolist() == [True, True, False, False, True]
    assert labels.tolist() == [1, 1, 0, 0, 0]
    keep, _ = false_negative_filter([0.9, 0.6, 0.7, 0.55, 0.3], num_positives=2, margin=0.0)
    assert keep.tolist() == [True, True, False, True, True]
    # No positive: the teacher's best (0.8) is the pseudo-positive; 0.75 is within 0.1 of it.
    keep, labels = false_negative_filter([0.2, 0.8, 0.75, 0.5], num_positives=0, margin=0.1)
    assert keep.tolist() == [True, True, False, True] and labels.tolist() == [0, 1, 0, 0]
    keep, labels = false_negative_filter([0.2, 0.8], num_positives=0, margin=None)
    assert keep.all() and labels.tolist() == [-1, -1]
    keep, labels = false_negative_filter([0.1, 0.8], num_positives=1, margin=None)
    assert keep.all() and labels.tolist() == [1, 0]
    with pytest.raises(ValueError, match="fn_margin must be >= 0"):
        false_negative_filter([0.1], 1, -0.5)


# ---------------------------------------------------------------------------------------------------------
# Mining end to end
# ---------------------------------------------------------------------------------------------------------


def test_mine_writes_teacher_scored_filtered_rows_the_recipes_read(workspace, tmp_path, one_thread):
    corpus = read_corpus(workspace["corpus"])
    queries = read_queries(workspace["queries"], corpus)
    teacher = load_scorer("embedding", workspace["embedder"])
    output = tmp_path / "mined.jsonl"
    summary = mine(queries, corpus, BM25Retriever(corpus.texts), teacher, output, top_k=6, fn_margin=0.02)
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert summary.num_rows == len(rows) and 0 < len(rows) <= len(queries)
    assert summary.num_pseudo_positives == 1
    by_id = {query.id: query for query in queries}
    for row in rows:
        query = by_id[row["query_id"]]
        assert row["query"] == query.text
        assert row["passages"] == [corpus.texts[corpus.position[i]] for i in row["passage_ids"]]
        assert len(set(row["passages"])) == len(row["passages"]) >= 2
        # The scores are the teacher's own for these pairs.
        (expected,) = score_groups(teacher, [RankingGroup(row["query"], row["passages"])], progress=False)
        np.testing.assert_allclose(row["scores"], expected, rtol=1e-5, atol=1e-6)
        assert row["labels"][0] == 1 and set(row["labels"][1:]) <= {0, 1}
        positives = [s for s, label in zip(row["scores"], row["labels"]) if label == 1]
        negatives = [s for s, label in zip(row["scores"], row["labels"]) if label == 0]
        assert max(negatives, default=-np.inf) < min(positives) - 0.02  # the filter held
        if query.positive_ids:
            assert row["passage_ids"][: len(query.positive_ids)] == query.positive_ids
        else:  # the pseudo-positive is the best-scored candidate
            assert row["labels"].count(1) == 1 and row["scores"][0] == max(row["scores"])
    # Everything the filter dropped was scored: the teacher scores file keeps every candidate.
    scored = [json.loads(line) for line in teacher_scores_file(output).read_text().splitlines()]
    assert sum(len(row["passages"]) for row in scored) == summary.num_candidates_scored + 9  # 9 known positives
    dropped = [int((~false_negative_filter(row["scores"], row["labels"].count(1), 0.02)[0]).sum()) for row in scored]
    assert sum(dropped) == summary.num_false_negatives_dropped > 0
    written = {row["query"] for row in rows}
    left_out = [row for row in scored if row["query"] not in written]
    assert len(left_out) == summary.num_queries_left_out
    # The training recipes' reader takes the rows as they are.
    groups = read_groups(output)
    assert [group.passages for group in groups] == [row["passages"] for row in rows]
    assert [group.labels for group in groups] == [row["labels"] for row in rows]


def test_mining_again_scores_nothing_and_writes_the_same_rows(workspace, tmp_path, one_thread):
    corpus = read_corpus(workspace["corpus"])
    queries = read_queries(workspace["queries"], corpus)
    teacher = load_scorer("embedding", workspace["embedder"])
    output = tmp_path / "mined.jsonl"
    mine(queries, corpus, BM25Retriever(corpus.texts), teacher, output, top_k=4, progress=False)
    first = output.read_text()

    def no_more_scoring(prepared):
        raise AssertionError("the teacher ran again on a complete scoring run")

    teacher.run_batch = teacher.start_batch = no_more_scoring  # start_batch: what the scorer calls
    mine(queries, corpus, BM25Retriever(corpus.texts), teacher, output, top_k=4, progress=False)
    assert output.read_text() == first


def test_mined_rows_train_an_embedding_student_one_step(workspace, tmp_path, one_thread):
    from hf_distill.recipe import run_distillation

    corpus = read_corpus(workspace["corpus"])
    queries = read_queries(workspace["queries"], corpus)
    teacher = load_scorer("embedding", workspace["embedder"])
    output = tmp_path / "mined.jsonl"
    mine(queries, corpus, BM25Retriever(corpus.texts), teacher, output, top_k=4, progress=False)
    report = run_distillation(
        "embedding",
        ["--model_name_or_path", workspace["embedder"], "--train_file", str(output)]
        + ["--output_dir", str(tmp_path / "student"), "--max_steps", "1", "--save_strategy", "no"]
        + ["--max_length", "64", "--per_device_train_batch_size", "4", "--report_to", "none"],
    )
    assert report["max_steps"] == 1 and report["train_data"] == str(output)
    assert (tmp_path / "student" / "model.safetensors").exists()


# ---------------------------------------------------------------------------------------------------------
# recipes/mine.py
# ---------------------------------------------------------------------------------------------------------


def test_mine_recipe_with_a_hybrid_first_stage(workspace, tmp_path, one_thread):
    output = tmp_path / "mined.jsonl"
    (summary,) = mine_recipe.main(
        ["--corpus_file", workspace["corpus"], "--queries_file", workspace["queries"], "--output_file", str(output)]
        + ["--retriever", "hybrid", "--retriever_model_name_or_path", workspace["embedder"], "--top_k", "5"]
        + ["--teacher_type", "embedding", "--teacher_model_name_or_path", workspace["embedder"], "--skip_top", "1"]
    )
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert summary.num_rows == len(rows) > 0
    assert json.loads(Path(f"{output}.mining.json").read_text())["num_rows"] == len(rows)
    assert all(len(row["passages"]) <= 1 + 5 for row in rows)  # one positive + at most top_k candidates


def test_mine_recipe_reads_a_beir_task_and_mines_its_judged_queries(tmp_path, one_thread, workspace):
    from test_retrieval import write_beir_task

    corpus_rows = tiny_corpus_rows(60, seed=2)
    query_rows = tiny_query_rows(corpus_rows, num_queries=10, seed=3)
    files = write_beir_task(tmp_path / "beir", corpus_rows, query_rows, judged=6)
    output = tmp_path / "mined.jsonl"
    (summary,) = mine_recipe.main(
        ["--corpus_file", files["corpus"], "--queries_file", files["queries"], "--qrels_file", files["qrels"]]
        + ["--output_file", str(output), "--retriever", "bm25", "--top_k", "5", "--fn_filter", "false"]
        + ["--teacher_type", "embedding", "--teacher_model_name_or_path", workspace["embedder"]]
    )
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert summary.num_rows == len(rows) == 6
    texts = {r["id"]: f"{r['title']} {r['text']}" for r in corpus_rows}
    for row, query in zip(rows, query_rows[:6]):
        assert row["query"] == query["query"]
        # the judged positive is in the row, labelled 1
        (positive,) = query["positive_ids"]
        assert row["labels"][row["passage_ids"].index(positive)] == 1
        assert row["passages"][row["passage_ids"].index(positive)] == texts[positive]


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--retriever", "dense"], "--retriever dense needs --retriever_model_name_or_path"),
        (["--rounds", "2"], "missing --output_dir, --train_config"),
        (["--fn_margin", "-1"], "--fn_margin must be >= 0"),
    ],
)
def test_mine_recipe_refuses_bad_options_with_one_line(workspace, tmp_path, capsys, flags, words):
    base = ["--corpus_file", workspace["corpus"], "--queries_file", workspace["queries"]]
    base += ["--teacher_type", "embedding", "--teacher_model_name_or_path", workspace["embedder"]]
    if "--rounds" not in flags:
        base += ["--output_file", str(tmp_path / "out.jsonl")]
    with pytest.raises(SystemExit) as stop:
        mine_recipe.main(base + flags)
    assert stop.value.code == 2
    assert words in capsys.readouterr().err


def test_mine_recipe_refuses_a_positive_missing_from_the_corpus(workspace, tmp_path, capsys):
    queries = write_jsonl(tmp_path / "q.jsonl", [{"query": "kernel", "positive_ids": ["nope"]}])
    with pytest.raises(SystemExit):
        mine_recipe.main(
            ["--corpus_file", workspace["corpus"], "--queries_file", queries, "--output_file", str(tmp_path / "o")]
            + ["--teacher_type", "embedding", "--teacher_model_name_or_path", workspace["embedder"]]
        )
    error = capsys.readouterr().err
    assert f"{queries}:1: field 'positive_ids[0]': id 'nope' is not in the corpus" in error


def test_two_mining_rounds_keep_each_rounds_data_and_student(workspace, tmp_path, one_thread):
    config = tmp_path / "train.yaml"
    config.write_text(
        f"model_name_or_path: {workspace['embedder']}\nmax_steps: 2\nsave_strategy: 'no'\nmax_length: 64\n"
        "per_device_train_batch_size: 4\nreport_to: none\nlearning_rate: 1.0e-3\n",
        encoding="utf-8",
    )
    summaries = mine_recipe.main(
        ["--corpus_file", workspace["corpus"], "--queries_file", workspace["queries"], "--top_k", "4"]
        + ["--teacher_type", "embedding", "--teacher_model_name_or_path", workspace["embedder"]]
        + ["--rounds", "2", "--output_dir", str(tmp_path / "rounds"), "--train_config", str(config)]
    )
    assert len(summaries) == 2
    for k in (1, 2):
        assert (tmp_path / "rounds" / f"round_{k}" / "mined.jsonl").exists()
        assert (tmp_path / "rounds" / f"round_{k}" / "student" / "model.safetensors").exists()
    report = json.loads((tmp_path / "rounds" / "round_2" / "student" / "distillation_report.json").read_text())
    assert report["base_model"] == str(tmp_path / "rounds" / "round_1" / "student")  # round 2 continues round 1
    # Round 2 mined with the round-1 student (dense), so its candidates differ from BM25's.
    first = [json.loads(line)["passage_ids"] for line in open(tmp_path / "rounds" / "round_1" / "mined.jsonl")]
    second = [json.loads(line)["passage_ids"] for line in open(tmp_path / "rounds" / "round_2" / "mined.jsonl")]
    assert first != second
