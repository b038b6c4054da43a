"""Scorers turn micro-batches into the [B, N] matrix; the matrix must equal scoring each pair/text on its own."""

import pytest
import torch

from hf_distill.collators import BiEncoderCollator, CrossEncoderCollator
from hf_distill.st_format import pool
from hf_distill.students import BiEncoderScorer, CrossEncoderScorer


def test_cross_encoder_matrix_equals_one_pair_at_a_time(tokenizer, tiny_reranker, listwise_rows):
    rows = listwise_rows[:3]
    batch = CrossEncoderCollator(tokenizer, micro_batch_max_tokens=64, micro_batch_overhead_tokens=0)(rows)
    tiny_reranker.eval()
    with torch.no_grad():
        matrix = CrossEncoderScorer().score_groups(tiny_reranker, batch["micro_batches"], batch)
        for b, row in enumerate(rows):
            for n, passage in enumerate(row["passages"]):
                alone = tiny_reranker(**tokenizer(row["query"], passage, return_tensors="pt")).logits[0, 0]
                assert matrix[b, n].item() == pytest.approx(alone.item(), abs=1e-5)


@pytest.mark.parametrize("pooling", ["cls", "mean", "last"])
def test_bi_encoder_matrix_equals_cosine_of_separate_embeddings(tokenizer, tiny_encoder, listwise_rows, pooling):
    rows = listwise_rows[:3]
    batch = BiEncoderCollator(tokenizer, micro_batch_max_tokens=64, micro_batch_overhead_tokens=0)(rows)
    scorer = BiEncoderScorer(pooling=pooling)
    tiny_encoder.eval()

    def embed(text):
        features = tokenizer(text, return_tensors="pt")
        hidden = tiny_encoder(**features).last_hidden_state
        return torch.nn.functional.normalize(pool(hidden, features["attention_mask"], pooling), dim=-1)[0]

    with torch.no_grad():
        matrix = scorer.score_groups(tiny_encoder, batch["micro_batches"], batch)
        for b, row in enumerate(rows):
            q = embed(row["query"])
            for n, passage in enumerate(row["passages"]):
                assert matrix[b, n].item() == pytest.approx(torch.dot(q, embed(passage)).item(), abs=1e-5)


def test_last_token_pooling_handles_left_and_right_padding():
    hidden = torch.arange(2 * 4 * 1, dtype=torch.float32).view(2, 4, 1)
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert pool(hidden, right, "last").view(-1).tolist() == [1.0, 7.0]
    assert pool(hidden, left, "last").view(-1).tolist() == [3.0, 7.0]
    assert pool(hidden, right, "mean").view(-1).tolist() == [0.5, 5.5]


def test_reranker_with_several_labels_is_refused_with_a_fix(tokenizer):
    from transformers import AutoModelForSequenceClassification

    from conftest import tiny_bert_config

    model = AutoModelForSequenceClassification.from_config(tiny_bert_config(tokenizer, num_labels=2))
    features = tokenizer(["q"], ["p"], return_tensors="pt")
    with pytest.raises(ValueError, match="num_labels=1"):
        CrossEncoderScorer().score_pairs(model, features)


def test_unknown_pooling_is_refused():
    with pytest.raises(ValueError, match="pooling"):
        BiEncoderScorer(pooling="max")
