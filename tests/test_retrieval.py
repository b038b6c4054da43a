"""hf_distill.retrieval: corpus and query files (and their errors), BM25 against its formula, dense retrieval
against a brute-force cosine, RRF by hand, two-stage reranking, and the metrics against pytrec_eval."""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path

import numpy as np
import pytest

from hf_distill.errors import DataFormatError, MissingDependencyError
from hf_distill.evaluation import load_scorer
from hf_distill.retrieval import (
    BM25Retriever,
    Corpus,
    DenseRetriever,
    HybridRetriever,
    build_retriever,
    encode_texts,
    evaluate_retrieval,
    per_query_retrieval_metrics,
    read_corpus,
    read_qrels,
    read_queries,
    reciprocal_rank_fusion,
    rerank,
    retrieval_metrics,
)
from hf_distill.st_format import write_sentence_transformers_config

from conftest import WORDS, save_tiny_checkpoint


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def tiny_corpus_rows(num_passages: int = 40, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [
        {"id": f"d{i}", "title": rng.choice(WORDS), "text": " ".join(rng.sample(WORDS, rng.randint(4, 10)))}
        for i in range(num_passages)
    ]


def tiny_query_rows(corpus_rows: list[dict], num_queries: int = 8, seed: int = 1) -> list[dict]:
    """Queries made of words of their positive passage, so BM25 finds it."""
    rng = random.Random(seed)
    rows = []
    for q in range(num_queries):
        positive = corpus_rows[rng.randrange(len(corpus_rows))]
        words = positive["text"].split()
        rows.append({"id": f"q{q}", "query": " ".join(rng.sample(words, 3)), "positive_ids": [positive["id"]]})
    return rows


@pytest.fixture(scope="module")
def tiny_embedder(tmp_path_factory, tokenizer) -> str:
    path = save_tiny_checkpoint(tokenizer, tmp_path_factory.mktemp("retrieval") / "embedder", "encoder", seed=3)
    write_sentence_transformers_config(path, pooling="mean", normalize=True, similarity="cosine", max_length=64)
    return path


# ---------------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------------


def test_corpus_reads_the_same_from_jsonl_parquet_and_a_dataset_dir(tmp_path):
    import datasets

    rows = tiny_corpus_rows(6)
    rows[0]["title"] = None  # no title: the passage is its text alone
    rows[1]["id"] = 17  # integer ids are read as strings
    jsonl = read_corpus(write_jsonl(tmp_path / "corpus.jsonl", rows))
    as_strings = [{**row, "id": str(row["id"])} for row in rows]  # a Parquet column has one type
    datasets.Dataset.from_list(as_strings).to_parquet(str(tmp_path / "corpus.parquet"))
    datasets.Dataset.from_list(as_strings).save_to_disk(str(tmp_path / "dir"))
    parquet = read_corpus(tmp_path / "corpus.parquet")
    directory = read_corpus(tmp_path / "dir")
    assert jsonl.ids == ["d0", "17", "d2", "d3", "d4", "d5"]
    assert jsonl.texts[0] == rows[0]["text"]
    assert jsonl.texts[2] == f"{rows[2]['title']} {rows[2]['text']}"
    assert parquet.ids == directory.ids == jsonl.ids
    assert parquet.texts == directory.texts == jsonl.texts
    assert jsonl.position["17"] == 1


@pytest.mark.parametrize(
    "bad_row, field, words",
    [
        ({"id": "d0", "text": "again"}, "id", "duplicate id 'd0' (first at line 1)"),
        ({"id": "d9", "text": "   "}, "text", "empty"),
        ({"text": "no id"}, "id", "missing"),
        ({"id": "d9", "text": "x", "title": 3}, "title", "must be a string"),
        ({"id": True, "text": "x"}, "id", "string or an integer"),
    ],
)
def test_a_bad_corpus_row_is_one_error_naming_file_line_and_field(tmp_path, bad_row, field, words):
    path = write_jsonl(tmp_path / "corpus.jsonl", [{"id": "d0", "text": "first"}, {"id": "d1", "text": "ok"}, bad_row])
    with pytest.raises(DataFormatError) as error:
        read_corpus(path)
    assert (error.value.source, error.value.place, error.value.field) == (path, "3", field)
    assert words in str(error.value) and "Fix:" in str(error.value)


def test_queries_read_positive_ids_and_refuse_an_unknown_one(tmp_path):
    corpus = Corpus(["a", "b", "c"], ["alpha", "beta", "gamma"], "corpus.jsonl")
    good = write_jsonl(
        tmp_path / "q.jsonl",
        [{"id": 1, "query": "first", "positive_ids": ["a", "c", "a"]}, {"query": "second"}],
    )
    queries = read_queries(good, corpus)
    assert [(q.id, q.text, q.positive_ids) for q in queries] == [
        ("1", "first", ["a", "c"]),
        (f"{good}:2", "second", []),
    ]
    bad = write_jsonl(
        tmp_path / "bad.jsonl", [{"query": "x", "positive_ids": ["a"]}, {"query": "y", "positive_ids": ["b", "zz"]}]
    )
    with pytest.raises(DataFormatError) as error:
        read_queries(bad, corpus)
    assert (error.value.place, error.value.field) == ("2", "positive_ids[1]")
    assert "'zz' is not in the corpus corpus.jsonl" in str(error.value)
    duplicate = write_jsonl(tmp_path / "dup.jsonl", [{"id": "q", "query": "x"}, {"id": "q", "query": "y"}])
    with pytest.raises(DataFormatError, match="duplicate query id 'q'"):
        read_queries(duplicate)
    empty = write_jsonl(tmp_path / "empty.jsonl", [{"query": ""}])
    with pytest.raises(DataFormatError, match="field 'query': is empty"):
        read_queries(empty)


def test_a_missing_optional_package_is_one_install_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "bm25s", None)  # import bm25s now raises ImportError
    with pytest.raises(MissingDependencyError) as error:
        BM25Retriever(["some text"])
    assert str(error.value) == 'bm25s is not installed (needed for retrieval). Fix: pip install "hf_distill[retrieval]"'


# ---------------------------------------------------------------------------------------------------------
# First stages
# ---------------------------------------------------------------------------------------------------------


def bm25_by_hand(query: list[str], documents: list[list[str]], k1: float = 1.5, b: float = 0.75) -> np.ndarray:
    """Robertson & Zaragoza's BM25 (Lucene variant), written out."""
    average = np.mean([len(d) for d in documents])
    scores = np.zeros(len(documents))
    for term in set(query):
        df = sum(term in d for d in documents)
        if df == 0:
            continue
        idf = math.log(1 + (len(documents) - df + 0.5) / (df + 0.5))
        for i, d in enumerate(documents):
            tf = d.count(term)
            scores[i] += idf * tf / (tf + k1 * (1 - b + b * len(d) / average))
    return scores


def test_bm25_scores_and_order_equal_the_formula():
    texts = [row["text"] for row in tiny_corpus_rows(30)]  # WORDS: no stop words, all at least 2 letters
    queries = ["kernel memory process", "archive compress", "zebra"]
    results = BM25Retriever(texts).search(queries, k=10)
    for q, query in enumerate(queries):
        expected = bm25_by_hand(query.split(), [text.split() for text in texts])
        matched = int((expected > 0).sum())
        found = results.indices[q][results.indices[q] >= 0]
        assert len(found) == min(matched, 10)
        np.testing.assert_allclose(results.scores[q, : len(found)], expected[found], rtol=1e-5)
        np.testing.assert_allclose(results.scores[q, : len(found)], np.sort(expected)[::-1][: len(found)], rtol=1e-5)
    assert (results.indices[2] == -1).all()  # no shared term: nothing returned


def test_dense_retrieval_is_the_brute_force_cosine_exact_and_hnsw(tiny_embedder, one_thread):
    encoder = load_scorer("embedding", tiny_embedder)
    texts = [row["text"] for row in tiny_corpus_rows(50)]
    queries = ["kernel memory", "print manual page", "shell script variable"]
    passages = encode_texts(encoder, [encoder.passage_text(t) for t in texts], max_tokens_per_batch=256)
    query_vectors = encode_texts(encoder, [encoder.query_text(q) for q in queries])
    np.testing.assert_allclose(np.linalg.norm(passages, axis=1), 1.0, atol=1e-5)
    cosines = query_vectors @ passages.T
    exact = DenseRetriever(encoder, texts, max_tokens_per_batch=256).search(queries, k=5)
    np.testing.assert_array_equal(exact.indices, np.argsort(-cosines, axis=1, kind="stable")[:, :5])
    np.testing.assert_allclose(exact.scores, np.sort(cosines, axis=1)[:, ::-1][:, :5], atol=1e-5)
    import faiss

    hnsw_retriever = DenseRetriever(encoder, texts, hnsw_threshold=10)
    assert isinstance(faiss.downcast_index(hnsw_retriever.index.index), faiss.IndexHNSWFlat)
    hnsw = hnsw_retriever.search(queries, k=5)
    np.testing.assert_array_equal(hnsw.indices[:, 0], exact.indices[:, 0])  # 50 points: the graph finds the best
    wide = DenseRetriever(encoder, texts[:3]).search(queries, k=5)
    assert (wide.indices[:, 3:] == -1).all() and np.isneginf(wide.scores[:, 3:]).all()


def test_rrf_fuses_ranks_as_written_out():
    bm25 = np.array([[3, 1, 2, -1]])
    dense = np.array([[1, 4, 3, 0]])
    fused = reciprocal_rank_fusion([bm25, dense], k=4, rrf_k=60)
    by_hand = {
        3: 1 / 61 + 1 / 63,
        1: 1 / 62 + 1 / 61,
        2: 1 / 63,
        4: 1 / 62,
        0: 1 / 64,
    }
    best = sorted(by_hand, key=lambda d: (-by_hand[d], d))[:4]
    assert fused.indices.tolist() == [best]
    np.testing.assert_allclose(fused.scores[0], [by_hand[d] for d in best], rtol=1e-6)


def test_hybrid_over_bm25_and_dense_finds_what_either_finds(tiny_embedder, one_thread):
    corpus_rows = tiny_corpus_rows(40)
    corpus = Corpus([r["id"] for r in corpus_rows], [r["text"] for r in corpus_rows])
    encoder = load_scorer("embedding", tiny_embedder)
    hybrid = build_retriever("hybrid", corpus, encoder, depth=20)
    assert isinstance(hybrid, HybridRetriever)
    queries = ["kernel memory process"]
    stages = [stage.search(queries, 20).indices for stage in hybrid.retrievers]
    fused = hybrid.search(queries, 5)
    np.testing.assert_array_equal(fused.indices, reciprocal_rank_fusion(stages, 5).indices)


def test_rerank_orders_the_first_stage_by_the_scorer(tiny_embedder, one_thread):
    from hf_distill.teachers import score_groups

    corpus_rows = tiny_corpus_rows(30)
    corpus = Corpus([r["id"] for r in corpus_rows], [r["text"] for r in corpus_rows])
    queries = ["kernel memory process", "zebra"]
    first = BM25Retriever(corpus.texts).search(queries, 8)
    scorer = load_scorer("embedding", tiny_embedder)
    reranked = rerank(scorer, queries, corpus, first)
    kept = [int(i) for i in first.indices[0] if i >= 0]
    from hf_distill.data import RankingGroup

    (scores,) = score_groups(scorer, [RankingGroup(queries[0], [corpus.texts[i] for i in kept])], progress=False)
    assert sorted(reranked.indices[0][reranked.indices[0] >= 0].tolist()) == sorted(kept)
    assert reranked.indices[0, 0] == kept[int(np.argmax(scores))]
    assert (np.diff(reranked.scores[0, : len(kept)]) <= 0).all()
    assert (reranked.indices[1] == -1).all()


# ---------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------


def test_metrics_equal_pytrec_eval_to_1e_6():
    pytrec_eval = pytest.importorskip("pytrec_eval")
    rng = np.random.default_rng(0)
    num_passages, num_queries, depth = 400, 60, 120
    ranked = np.stack([rng.permutation(num_passages)[:depth] for _ in range(num_queries)])
    ranked[5, 50:] = -1  # a short list
    relevant = [rng.choice(num_passages, size=rng.integers(1, 25), replace=False).tolist() for _ in range(num_queries)]
    relevant[7] = ranked[7, :3].tolist() + [int(ranked[7, 110])]  # hits at the top and past 100
    relevant[8] = []  # no judgement: left out
    ours = per_query_retrieval_metrics(ranked, relevant)
    judged = [q for q in range(num_queries) if relevant[q]]
    qrels = {f"q{q}": {f"d{d}": 1 for d in relevant[q]} for q in judged}

    def run(cut: int) -> dict:
        # Distinct scores, falling with rank: trec_eval's order is then exactly ours.
        return {f"q{q}": {f"d{d}": float(depth - i) for i, d in enumerate(ranked[q][:cut]) if d >= 0} for q in judged}

    full = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100", "map_cut.100"}).evaluate(run(depth))
    top10 = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(run(10))
    for key, measure, source in (
        ("ndcg@10", "ndcg_cut_10", full),
        ("recall@100", "recall_100", full),
        ("map@100", "map_cut_100", full),
        ("mrr@10", "recip_rank", top10),
    ):
        expected = np.array([source[f"q{q}"][measure] for q in judged])
        np.testing.assert_allclose(ours[key], expected, atol=1e-6, err_msg=key)
    means = retrieval_metrics(ranked, relevant)
    assert means["num_queries"] == len(judged)
    assert abs(means["ndcg@10"] - np.mean([full[f"q{q}"]["ndcg_cut_10"] for q in judged])) < 1e-6
    assert ours["recall@100"][judged.index(7)] == pytest.approx(0.75)


def test_metrics_of_a_perfect_and_an_empty_ranking():
    perfect = retrieval_metrics(np.array([[4, 2, 0, 1]]), [[4, 2]])
    assert perfect == {"ndcg@10": 1.0, "mrr@10": 1.0, "recall@100": 1.0, "map@100": 1.0, "num_queries": 1}
    nothing = retrieval_metrics(np.array([[-1, -1]]), [[3]])
    assert nothing["ndcg@10"] == nothing["mrr@10"] == nothing["recall@100"] == nothing["map@100"] == 0.0


def test_evaluate_retrieval_finds_the_positives_with_bm25(tmp_path):
    corpus_rows = tiny_corpus_rows(40)
    corpus = read_corpus(write_jsonl(tmp_path / "c.jsonl", corpus_rows))
    queries = read_queries(write_jsonl(tmp_path / "q.jsonl", tiny_query_rows(corpus_rows)), corpus)
    metrics = evaluate_retrieval(BM25Retriever(corpus.texts), corpus, queries)
    # Each query is 3 words of its positive: BM25 ranks it high, far above a random order's ~0.08.
    assert metrics["num_queries"] == 8
    assert metrics["recall@100"] == 1.0
    assert metrics["ndcg@10"] > 0.5


def write_beir_task(root: Path, corpus_rows: list[dict], query_rows: list[dict], judged: int) -> dict[str, str]:
    """The BEIR / MTEB layout of a task: corpus.jsonl {_id, title, text}, queries.jsonl {_id, text} (every
    query, judged or not), qrels/test.tsv with a header, judging the first ``judged`` queries (plus one score-0
    line, which is not a positive)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "qrels").mkdir()
    beir_corpus = [{"_id": r["id"], "title": r["title"], "text": r["text"]} for r in corpus_rows]
    beir_queries = [{"_id": r["id"], "text": r["query"]} for r in query_rows]
    lines = ["query-id\tcorpus-id\tscore"]
    lines += [f"{r['id']}\t{p}\t1" for r in query_rows[:judged] for p in r["positive_ids"]]
    lines.append(f"{query_rows[0]['id']}\t{corpus_rows[-1]['id']}\t0")
    (root / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {
        "corpus": write_jsonl(root / "corpus.jsonl", beir_corpus),
        "queries": write_jsonl(root / "queries.jsonl", beir_queries),
        "qrels": str(root / "qrels" / "test.tsv"),
    }


def test_the_beir_layout_reads_as_it_is_and_keeps_the_judged_queries(tmp_path):
    corpus_rows = tiny_corpus_rows(40)
    query_rows = tiny_query_rows(corpus_rows)
    files = write_beir_task(tmp_path / "beir", corpus_rows, query_rows, judged=5)
    corpus = read_corpus(files["corpus"])
    assert corpus.ids == [r["id"] for r in corpus_rows]
    assert corpus.texts[0] == f"{corpus_rows[0]['title']} {corpus_rows[0]['text']}"
    qrels = read_qrels(files["qrels"], corpus)
    queries = read_queries(files["queries"], corpus, qrels=qrels)
    # The 3 unjudged queries are left out; the score-0 judgement is no positive.
    assert [q.id for q in queries] == [r["id"] for r in query_rows[:5]]
    assert [q.positive_ids for q in queries] == [r["positive_ids"] for r in query_rows[:5]]
    assert [q.text for q in queries] == [r["query"] for r in query_rows[:5]]
    # The same judgements as rows (MTEB's qrels configs on the Hub, JSONL, Parquet) read the same.
    rows = [
        {"query-id": line.split("\t")[0], "corpus-id": line.split("\t")[1], "score": int(line.split("\t")[2])}
        for line in Path(files["qrels"]).read_text().splitlines()[1:]
    ]
    assert read_qrels(write_jsonl(tmp_path / "qrels.jsonl", rows), corpus) == qrels


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("q0\tnot-a-passage\t1", ["line 3", "corpus-id", "'not-a-passage' is not in the corpus"]),
        ("q0\td1", ["line 3", "expected 3 tab-separated fields"]),
        ("q0\td1\thigh", ["line 3", "score", "must be a number"]),
    ],
)
def test_a_bad_qrels_line_is_one_error_naming_the_line(tmp_path, line, words):
    corpus = read_corpus(write_jsonl(tmp_path / "c.jsonl", tiny_corpus_rows(5)))
    path = tmp_path / "test.tsv"
    path.write_text(f"query-id\tcorpus-id\tscore\nq0\td0\t1\n{line}\n", encoding="utf-8")
    with pytest.raises(DataFormatError) as error:
        read_qrels(path, corpus)
    for word in words:
        assert word in str(error.value)


def test_a_judged_query_without_a_query_row_is_one_error(tmp_path):
    corpus_rows = tiny_corpus_rows(10)
    corpus = read_corpus(write_jsonl(tmp_path / "c.jsonl", corpus_rows))
    queries_file = write_jsonl(tmp_path / "q.jsonl", [{"_id": "q0", "text": "a query"}])
    with pytest.raises(DataFormatError, match="1 judged query id.*'q9'.*Fix: use the queries file"):
        read_queries(queries_file, corpus, qrels={"q0": ["d0"], "q9": ["d1"]})


# ---------------------------------------------------------------------------------------------------------
# recipes/evaluate.py --corpus_file --queries_file
# ---------------------------------------------------------------------------------------------------------


def test_evaluate_recipe_measures_student_base_and_teacher_as_retrievers(
    tmp_path, tokenizer, tiny_embedder, one_thread
):
    from test_evaluate import evaluate_recipe

    reranker = save_tiny_checkpoint(tokenizer, tmp_path / "reranker", "reranker", seed=4)
    corpus_rows = tiny_corpus_rows(40)
    corpus_file = write_jsonl(tmp_path / "corpus.jsonl", corpus_rows)
    queries_file = write_jsonl(tmp_path / "queries.jsonl", tiny_query_rows(corpus_rows))
    other_queries = write_jsonl(tmp_path / "other.jsonl", tiny_query_rows(corpus_rows, num_queries=5, seed=7))
    output_dir = tmp_path / "evaluation"
    evaluate_recipe.main(
        ["--model_name_or_path", tiny_embedder, "--base_model_name_or_path", tiny_embedder, "--num_hidden_layers", "1"]
        + ["--teacher_model_name_or_path", reranker, "--teacher_type", "reranker"]
        + ["--corpus_file", corpus_file, "--queries_file", queries_file, other_queries, "--output_dir", str(output_dir)]
    )
    report = json.loads((output_dir / "metrics.json").read_text())
    result = report["retrieval"]["queries"]
    assert result["corpus_size"] == 40 and result["num_queries"] == 8
    for row in ("teacher", "base", "student"):
        assert set(result[row]) == {"ndcg@10", "mrr@10", "recall@100", "map@100", "num_queries"}
    assert result["retrievers"]["teacher"] == "BM25 top 100, reranked"
    # The student row is what a dense retriever over the same files measures, computed here on its own.
    corpus = read_corpus(corpus_file)
    queries = read_queries(queries_file, corpus)
    expected = evaluate_retrieval(
        DenseRetriever(load_scorer("embedding", tiny_embedder), corpus.texts), corpus, queries
    )
    for key in ("ndcg@10", "mrr@10", "recall@100", "map@100"):
        assert result["student"][key] == pytest.approx(expected[key], abs=1e-9)
        assert result["change"][key]["absolute"] == pytest.approx(result["student"][key] - result["base"][key])
    # BM25 finds every positive within 100 of 40 passages: the teacher reranks all of them.
    assert result["teacher"]["recall@100"] == 1.0
    # A second query set over the same corpus, measured by the same (once encoded) index.
    other = report["retrieval"]["other"]
    assert other["num_queries"] == 5 and set(other) >= {"teacher", "base", "student", "change"}
    expected = evaluate_retrieval(
        DenseRetriever(load_scorer("embedding", tiny_embedder), corpus.texts),
        corpus,
        read_queries(other_queries, corpus),
    )
    assert other["student"]["ndcg@10"] == pytest.approx(expected["ndcg@10"], abs=1e-9)
    markdown = (output_dir / "metrics.md").read_text()
    assert "## retrieval: queries" in markdown and "| student |" in markdown and "nDCG@10" in markdown


def test_evaluate_recipe_measures_a_beir_task_on_its_judged_queries(tmp_path, tiny_embedder, one_thread):
    from test_evaluate import evaluate_recipe

    corpus_rows = tiny_corpus_rows(40)
    query_rows = tiny_query_rows(corpus_rows)
    files = write_beir_task(tmp_path / "beir", corpus_rows, query_rows, judged=5)
    output_dir = tmp_path / "evaluation"
    evaluate_recipe.main(
        ["--model_name_or_path", tiny_embedder, "--corpus_file", files["corpus"], "--queries_file", files["queries"]]
        + ["--qrels_file", files["qrels"], "--output_dir", str(output_dir)]
    )
    result = json.loads((output_dir / "metrics.json").read_text())["retrieval"]["queries"]
    assert result["num_queries"] == 5
    corpus = read_corpus(write_jsonl(tmp_path / "corpus.jsonl", corpus_rows))
    judged = read_queries(write_jsonl(tmp_path / "judged.jsonl", query_rows[:5]), corpus)
    expected = evaluate_retrieval(DenseRetriever(load_scorer("embedding", tiny_embedder), corpus.texts), corpus, judged)
    assert result["student"]["ndcg@10"] == pytest.approx(expected["ndcg@10"], abs=1e-9)


def test_evaluate_recipe_refuses_qrels_that_do_not_pair_with_the_queries(tmp_path, capsys):
    from test_evaluate import evaluate_recipe

    argv = ["--model_name_or_path", "m", "--corpus_file", "c.jsonl", "--queries_file", "a.jsonl", "b.jsonl", "c.jsonl"]
    with pytest.raises(SystemExit) as stop:
        evaluate_recipe.main(argv + ["--qrels_file", "x.tsv", "y.tsv", "--output_dir", str(tmp_path)])
    assert stop.value.code == 2
    assert "--qrels_file: 2 files for 3 --queries_file" in capsys.readouterr().err


def test_evaluate_recipe_refuses_a_corpus_without_queries(tmp_path, capsys):
    from test_evaluate import evaluate_recipe

    with pytest.raises(SystemExit) as stop:
        evaluate_recipe.main(["--model_name_or_path", "m", "--corpus_file", "c.jsonl", "--output_dir", str(tmp_path)])
    assert stop.value.code == 2
    assert "needs both --corpus_file and --queries_file" in capsys.readouterr().err


DATA_PARALLEL_SCRIPT = """
import json, sys
import numpy as np
from hf_distill.evaluation import load_scorer
from hf_distill.retrieval import DenseRetriever, encode_texts
import torch.distributed as dist
model, texts_file, output = sys.argv[1:4]
texts = json.load(open(texts_file))
encoder = load_scorer("embedding", model)
vectors = encode_texts(encoder, texts, max_tokens_per_batch=128)  # many small batches: both ranks get some
results = DenseRetriever(encoder, texts, max_tokens_per_batch=128).search(texts[:5], k=4)
import os
np.savez(output + f".rank{os.environ['RANK']}.npz", vectors=vectors, indices=results.indices)
"""


@pytest.mark.slow
def test_corpus_encoding_is_shared_by_two_processes_with_the_same_vectors(tmp_path, tiny_embedder):
    import os
    import subprocess

    from conftest import free_port

    texts = [row["text"] for row in tiny_corpus_rows(60)]
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    (tmp_path / "encode.py").write_text(DATA_PARALLEL_SCRIPT)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
    ]
    command += [str(tmp_path / "encode.py"), tiny_embedder, str(tmp_path / "texts.json"), str(tmp_path / "out")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    encoder = load_scorer("embedding", tiny_embedder)
    alone = encode_texts(encoder, texts, max_tokens_per_batch=128, rank=0, world_size=1)
    expected = DenseRetriever(encoder, texts, max_tokens_per_batch=128).search(texts[:5], k=4).indices
    for rank in (0, 1):
        shared = np.load(tmp_path / f"out.rank{rank}.npz")
        np.testing.assert_allclose(shared["vectors"], alone, atol=1e-6)
        np.testing.assert_array_equal(shared["indices"], expected)


FAILING_RANK_SCRIPT = """
import os, sys, time
import numpy as np
from hf_distill.errors import HfDistillError
from hf_distill.evaluation import load_scorer
from hf_distill.retrieval import encode_texts
encoder = load_scorer("embedding", sys.argv[1])
if os.environ["RANK"] == "1":  # this process's encoder breaks: float16 overflow, say
    original = encoder.run_batch
    encoder.run_batch = lambda prepared: original(prepared) * np.nan
started = time.monotonic()
try:
    encode_texts(encoder, ["a text about the kernel %d" % i for i in range(40)], max_tokens_per_batch=64)
except HfDistillError as error:
    print("rank %s after %.0f s: %s: %s" % (os.environ["RANK"], time.monotonic() - started, type(error).__name__, error))
    sys.exit(3)
"""


@pytest.mark.slow
def test_a_process_that_fails_while_encoding_stops_the_others_at_once(tmp_path, tiny_embedder):
    import os
    import subprocess

    from conftest import free_port

    (tmp_path / "encode.py").write_text(FAILING_RANK_SCRIPT)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command += ["--master_port", str(free_port()), str(tmp_path / "encode.py"), tiny_embedder]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode != 0
    assert "rank 1 after" in result.stdout and "NonFiniteScoreError: " in result.stdout, result.stdout + result.stderr
    peer = next(line for line in result.stdout.splitlines() if line.startswith("rank 0 after"))
    assert "PeerProcessError: process 1 of 2 failed while encoding (NonFiniteScoreError" in peer
