"""tests/offline_hub.py: the fake hub cache resolves the recipes' real ids offline, to the right classes.

The hub is built once per module; every check of the real ids runs in ONE subprocess started with
``offline_hub_env`` (``huggingface_hub`` reads ``HF_HOME`` at import, so it cannot be set from inside this
process), which prints a JSON report that the tests below read. In that subprocess every socket connection and
DNS lookup raises and is recorded, so a test fails if anything tries the network despite ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from offline_hub import (
    BGE_M3,
    BGE_RERANKER,
    DATASET_IDS,
    MINILM,
    MODEL_IDS,
    MTEB_DATASETS,
    QWEN3_EMBEDDING_QUERY_PROMPT,
    QWEN3_EMBEDDINGS,
    QWEN3_RERANKERS,
    SCORED_FILES,
    build_offline_hub,
    fake_commit_sha,
    mteb_rows,
    offline_hub_env,
    offline_subprocess_env,
    write_mteb_rows_files,
    write_scored_mteb_files,
)

REPO = Path(__file__).resolve().parents[1]

# Facts about the real checkpoints: (config class, AutoModel class to load with, loaded model class, tokenizer
# class names transformers v5 / v4 give for them).
XLMR_TOKENIZERS = {"XLMRobertaTokenizer", "XLMRobertaTokenizerFast"}
QWEN2_TOKENIZERS = {"Qwen2Tokenizer", "Qwen2TokenizerFast"}
BERT_TOKENIZERS = {"BertTokenizer", "BertTokenizerFast"}
EXPECTED = {
    BGE_RERANKER: ("XLMRobertaConfig", "AutoModelForSequenceClassification", "XLMRobertaForSequenceClassification",
                   XLMR_TOKENIZERS),
    BGE_M3: ("XLMRobertaConfig", "AutoModel", "XLMRobertaModel", XLMR_TOKENIZERS),
    **{r: ("Qwen3Config", "AutoModelForCausalLM", "Qwen3ForCausalLM", QWEN2_TOKENIZERS) for r in QWEN3_RERANKERS},
    **{r: ("Qwen3Config", "AutoModel", "Qwen3Model", QWEN2_TOKENIZERS) for r in QWEN3_EMBEDDINGS},
    MINILM: ("BertConfig", "AutoModel", "BertModel", BERT_TOKENIZERS),
}  # fmt: skip
ST_MODELS = {BGE_M3: "cls", QWEN3_EMBEDDINGS[0]: "lasttoken", QWEN3_EMBEDDINGS[1]: "lasttoken", MINILM: "mean"}

# Runs in the subprocess; argv: json of {repo id: auto class}, json of ST ids, json of {dataset id: splits}.
CHECK_SCRIPT = r"""
import json, math, os, socket, sys

NETWORK = []


def _refuse(*args, **kwargs):
    NETWORK.append(repr(args)[:200])
    raise OSError("network access attempted in an offline test")


_connect = socket.socket.connect


def _guarded_connect(self, address, *args):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        return _refuse(address)
    return _connect(self, address, *args)


socket.socket.connect = _guarded_connect
socket.getaddrinfo = _refuse
socket.create_connection = _refuse

import torch
import transformers
from transformers import AutoConfig, AutoTokenizer
from transformers.utils import cached_file

autos, st_ids, datasets_splits = (json.loads(a) for a in sys.argv[1:4])
report = {"models": {}, "st": {}, "datasets": {}, "env_hf_home": os.environ.get("HF_HOME")}
torch.manual_seed(0)

for repo_id, auto_name in autos.items():
    config = AutoConfig.from_pretrained(repo_id)
    tok = AutoTokenizer.from_pretrained(repo_id)
    model = getattr(transformers, auto_name).from_pretrained(repo_id).eval()
    enc = tok(["how do I install python", "list files"], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**enc)
    tensor = out.logits if hasattr(out, "logits") else out.last_hidden_state
    ids = enc["input_ids"].tolist()
    info = {
        "config_class": type(config).__name__,
        "architectures": config.architectures,
        "model_class": type(model).__name__,
        "tokenizer_class": type(tok).__name__,
        "is_fast": tok.is_fast,
        "is_xlmr_fast": isinstance(tok, transformers.XLMRobertaTokenizerFast),
        "is_qwen2_fast": isinstance(tok, transformers.Qwen2TokenizerFast),
        "is_bert_fast": isinstance(tok, transformers.BertTokenizerFast),
        "padding_side": tok.padding_side,
        "pad_token": tok.pad_token, "pad_token_id": tok.pad_token_id,
        "eos_token": tok.eos_token, "bos_token": tok.bos_token, "unk_token_id": tok.unk_token_id,
        "mask_token_id": tok.mask_token_id,
        "len_tokenizer": len(tok), "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size, "num_hidden_layers": config.num_hidden_layers,
        "max_position_embeddings": config.max_position_embeddings,
        "tie_word_embeddings": getattr(config, "tie_word_embeddings", None),
        "config_pad_token_id": config.pad_token_id,
        "ids": ids, "attention_mask": enc["attention_mask"].tolist(),
        "single_ids": tok("query")["input_ids"],
        "output_shape": list(tensor.shape), "output_finite": bool(torch.isfinite(tensor).all()),
        "has_pooler": any(k.startswith("pooler.") for k in model.state_dict()),
        "name_or_path": config._name_or_path,
        "config_file": cached_file(repo_id, "config.json"),
    }
    if config.model_type == "qwen3":
        words = {}
        for word in ("yes", "no", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"):
            token_id = tok.convert_tokens_to_ids(word)
            words[word] = {"id": token_id, "encoded": tok.encode(word, add_special_tokens=False)}
        info["words"] = words
        from hf_distill.prompts import yes_no_token_ids
        info["yes_no_token_ids"] = list(yes_no_token_ids(tok))
        info["chat"] = tok.apply_chat_template(
            [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
        )
    report["models"][repo_id] = info

from sentence_transformers import CrossEncoder, SentenceTransformer

for repo_id in st_ids:
    st = SentenceTransformer(repo_id, device="cpu")
    pooling = st[1]
    emb = st.encode(["how do I install python", "list the files of a directory"], convert_to_tensor=True)
    report["st"][repo_id] = {
        "modules": [type(m).__name__ for m in st],
        "pooling_mode": getattr(pooling, "pooling_mode", None) or pooling.get_config_dict().get("pooling_mode"),
        "pooling_config": pooling.get_config_dict(),
        "prompts": st.prompts,
        "similarity_fn_name": st.similarity_fn_name,
        "max_seq_length": st.max_seq_length,
        "dim": st.get_sentence_embedding_dimension(),
        "norms": emb.norm(dim=-1).tolist(),
    }
    # What a student given by this Hub id trains with under --pooling auto (the trainer's reader).
    from hf_distill.st_format import declared_pooling

    report["st"][repo_id]["student_pooling"] = list(declared_pooling(repo_id))

ce = CrossEncoder("BAAI/bge-reranker-v2-m3", device="cpu")
scores = ce.predict([("how do I install python", "install python with apt"), ("list files", "grub boot loader")])
report["cross_encoder"] = {"scores": [float(s) for s in scores]}

from huggingface_hub import hf_hub_download, snapshot_download

path = hf_hub_download("BAAI/bge-m3", "1_Pooling/config.json")
report["hf_hub_download"] = {"path": path, "content": json.load(open(path, encoding="utf-8"))}

import datasets

for repo_id, splits in datasets_splits.items():
    folder = snapshot_download(repo_id, repo_type="dataset", local_files_only=True)
    entry = {"folder": folder, "splits": {}}
    for split in splits:
        ds = datasets.load_dataset(folder, split=split)
        entry["splits"][split] = {"columns": ds.column_names, "rows": ds.to_list()}
    report["datasets"][repo_id] = entry

report["network"] = NETWORK
print("REPORT " + json.dumps(report))
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> dict:
    hf_home = tmp_path_factory.mktemp("hf_home")
    start = time.perf_counter()
    snapshots = build_offline_hub(hf_home)
    build_s = time.perf_counter() - start
    return {"hf_home": hf_home, "snapshots": snapshots, "build_s": build_s}


@pytest.fixture(scope="module")
def report(hub) -> dict:
    autos = {repo_id: EXPECTED[repo_id][1] for repo_id in MODEL_IDS}
    splits = {repo_id: list(s) for repo_id, (_, s) in MTEB_DATASETS.items()}
    proc = subprocess.run(
        [sys.executable, "-c", CHECK_SCRIPT, json.dumps(autos), json.dumps(list(ST_MODELS)), json.dumps(splits)],
        env=offline_subprocess_env(hub["hf_home"]),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("REPORT ")]
    assert proc.returncode == 0 and lines, f"check subprocess failed (rc {proc.returncode}):\n{proc.stderr[-6000:]}"
    return json.loads(lines[-1][len("REPORT ") :])


# ---------------------------------------------------------------------------------------------------------
# Layout (in process, no loading)
# ---------------------------------------------------------------------------------------------------------


def test_layout_is_the_hub_cache_layout(hub):
    hub_dir = Path(hub["hf_home"]) / "hub"
    assert set(hub["snapshots"]) == set(MODEL_IDS) | set(DATASET_IDS)
    for repo_id, snapshot in hub["snapshots"].items():
        repo_type = "dataset" if repo_id in DATASET_IDS else "model"
        repo_folder = hub_dir / f"{repo_type}s--{repo_id.replace('/', '--')}"
        sha = (repo_folder / "refs" / "main").read_text()
        assert re.fullmatch(r"[0-9a-f]{40}", sha) and sha == fake_commit_sha(repo_id, repo_type)
        assert Path(snapshot) == repo_folder / "snapshots" / sha
        files = [p for p in Path(snapshot).rglob("*") if not p.is_dir()]
        assert files and all(p.resolve().parent == (repo_folder / "blobs").resolve() for p in files)
    for repo_id in MODEL_IDS:
        names = {p.name for p in Path(hub["snapshots"][repo_id]).iterdir()}
        assert {"config.json", "model.safetensors", "tokenizer_config.json", "tokenizer.json"} <= names, repo_id
    for repo_id in ST_MODELS:
        snapshot = Path(hub["snapshots"][repo_id])
        names = {p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*")}
        st_files = {"modules.json", "1_Pooling/config.json", "sentence_bert_config.json"}
        assert st_files | {"config_sentence_transformers.json"} <= names, repo_id
    for repo_id, (_, splits) in MTEB_DATASETS.items():
        for split in splits:
            assert (Path(hub["snapshots"][repo_id]) / "data" / f"{split}-00000-of-00001.parquet").is_file()
    assert hub["build_s"] < 60, f"building the offline hub took {hub['build_s']:.1f}s"


def test_offline_hub_env(tmp_path):
    env = offline_hub_env(tmp_path)
    assert env["HF_HOME"] == str(tmp_path)
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
        assert env[key] == "1"
    assert env["TOKENIZERS_PARALLELISM"] == "false"
    merged = offline_subprocess_env(tmp_path, base={"PATH": "/bin", "SENTENCE_TRANSFORMERS_HOME": "/elsewhere"})
    assert merged["PATH"] == "/bin" and merged["HF_HOME"] == str(tmp_path)
    assert "SENTENCE_TRANSFORMERS_HOME" not in merged  # it would make SentenceTransformer look elsewhere


# ---------------------------------------------------------------------------------------------------------
# Real ids, resolved in the offline subprocess
# ---------------------------------------------------------------------------------------------------------


def test_nothing_tried_the_network(report, hub):
    assert report["network"] == []
    assert report["env_hf_home"] == str(hub["hf_home"])


@pytest.mark.parametrize("repo_id", MODEL_IDS)
def test_model_resolves_to_tiny_checkpoint_of_the_real_architecture(report, hub, repo_id):
    config_class, _, model_class, tokenizer_classes = EXPECTED[repo_id]
    info = report["models"][repo_id]
    assert info["config_class"] == config_class
    assert info["architectures"] == [model_class]
    assert info["model_class"] == model_class
    assert info["tokenizer_class"] in tokenizer_classes and info["is_fast"]
    assert info["hidden_size"] <= 64 and info["num_hidden_layers"] == 2
    assert info["len_tokenizer"] <= info["vocab_size"]
    assert info["output_finite"]
    assert info["name_or_path"] == repo_id
    assert Path(info["config_file"]) == Path(hub["snapshots"][repo_id]) / "config.json"


@pytest.mark.parametrize("repo_id", [BGE_RERANKER, BGE_M3])
def test_xlmr_tokenizer_like_xlm_roberta(report, repo_id):
    info = report["models"][repo_id]
    assert info["is_xlmr_fast"]  # v5: XLMRobertaTokenizerFast is an alias of XLMRobertaTokenizer
    assert info["pad_token"] == "<pad>" and info["pad_token_id"] == 1 == info["config_pad_token_id"]
    assert info["unk_token_id"] == 3 and info["mask_token_id"] == info["len_tokenizer"] - 1
    assert info["padding_side"] == "right"
    single = info["single_ids"]
    assert single[0] == 0 and single[-1] == 2  # <s> ... </s>
    assert info["max_position_embeddings"] == 8194  # 8192 tokens after XLM-R's padding_idx offset
    assert 200 <= info["len_tokenizer"] <= 1200
    assert 3 not in sum(info["ids"], [])  # ordinary English has no <unk>


def test_bge_heads(report):
    assert report["models"][BGE_RERANKER]["output_shape"][-1] == 1  # num_labels=1
    assert report["models"][BGE_M3]["has_pooler"]  # the real bge-m3 checkpoint carries pooler weights
    assert not report["models"][BGE_RERANKER]["has_pooler"]


@pytest.mark.parametrize("repo_id", [*QWEN3_RERANKERS, *QWEN3_EMBEDDINGS])
def test_qwen3_tokenizer(report, repo_id):
    info = report["models"][repo_id]
    assert info["is_qwen2_fast"]  # v5: Qwen2TokenizerFast is an alias of Qwen2Tokenizer
    assert info["pad_token"] == "<|endoftext|>" and info["eos_token"] == "<|im_end|>" and info["bos_token"] is None
    assert info["padding_side"] == "left"
    for word, entry in info["words"].items():
        assert entry["encoded"] == [entry["id"]], word  # one token each, chat tokens included
    assert info["yes_no_token_ids"] == [info["words"]["yes"]["id"], info["words"]["no"]["id"]]
    # left padding: the shorter text's pad columns come first, so the last column is every text's last token
    short = min(range(2), key=lambda i: sum(info["attention_mask"][i]))
    assert info["attention_mask"][short][0] == 0 and info["ids"][short][0] == info["pad_token_id"]
    assert all(row[-1] == 1 for row in info["attention_mask"])
    assert info["chat"].startswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")


def test_qwen3_embedding_appends_endoftext_and_reranker_does_not(report):
    for repo_id in QWEN3_EMBEDDINGS:
        info = report["models"][repo_id]
        assert info["single_ids"][-1] == info["words"]["<|endoftext|>"]["id"]
        assert all(row[-1] == info["words"]["<|endoftext|>"]["id"] for row in info["ids"])
    for repo_id in QWEN3_RERANKERS:
        info = report["models"][repo_id]
        assert info["words"]["<|endoftext|>"]["id"] not in info["single_ids"]


def test_qwen3_rerankers(report):
    small, big = (report["models"][r] for r in QWEN3_RERANKERS)
    assert small["output_shape"][-1] == small["vocab_size"]
    assert small["tie_word_embeddings"] and not big["tie_word_embeddings"]  # as the real 0.6B and 8B


@pytest.mark.parametrize("repo_id", list(ST_MODELS))
def test_sentence_transformer_pooling(report, repo_id):
    info = report["st"][repo_id]
    assert info["modules"][1:] == ["Pooling", "Normalize"]
    assert info["pooling_mode"] == ST_MODELS[repo_id]
    assert info["dim"] == report["models"][repo_id]["hidden_size"]
    assert all(math.isclose(n, 1.0, rel_tol=1e-4) for n in info["norms"])
    assert info["similarity_fn_name"] == "cosine"
    # --pooling auto on the Hub id: the checkpoint's own pooling (not CLS by default), and its Normalize
    expected = {"cls": "cls", "mean": "mean", "lasttoken": "last"}[ST_MODELS[repo_id]]
    assert info["student_pooling"] == [expected, True]


def test_sentence_transformer_configs(report):
    assert report["st"][BGE_M3]["max_seq_length"] == 8192
    for repo_id in QWEN3_EMBEDDINGS:
        assert report["st"][repo_id]["prompts"] == {"query": QWEN3_EMBEDDING_QUERY_PROMPT, "document": ""}
    assert report["st"][MINILM]["max_seq_length"] == 256  # the real all-MiniLM-L6-v2's


def test_cross_encoder_predicts_finite_scores(report):
    scores = report["cross_encoder"]["scores"]
    assert len(scores) == 2 and all(math.isfinite(s) for s in scores)


def test_hf_hub_download(report, hub):
    entry = report["hf_hub_download"]
    assert Path(entry["path"]) == Path(hub["snapshots"][BGE_M3]) / "1_Pooling" / "config.json"
    assert entry["content"]["pooling_mode_cls_token"] is True


@pytest.mark.parametrize("repo_id", DATASET_IDS)
def test_mteb_dataset_from_snapshot_folder(report, hub, repo_id):
    task, splits = MTEB_DATASETS[repo_id]
    entry = report["datasets"][repo_id]
    assert Path(entry["folder"]) == Path(hub["snapshots"][repo_id])
    assert sorted(entry["splits"]) == sorted(splits)
    for split, got in entry["splits"].items():
        assert got["columns"] == ["query", "positive", "negative"]
        assert got["rows"] == mteb_rows(task, split)
        assert 12 <= len(got["rows"]) <= 24
        for row in got["rows"]:
            assert 1 <= len(row["positive"]) <= 2 and 6 <= len(row["negative"]) <= 10


# ---------------------------------------------------------------------------------------------------------
# Scored and unscored JSONL files
# ---------------------------------------------------------------------------------------------------------


def test_scored_files_at_the_config_paths(tmp_path):
    from hf_distill.data import read_groups

    written = write_scored_mteb_files(tmp_path)
    assert set(written) == set(SCORED_FILES)
    configs = "\n".join(p.read_text() for p in (REPO / "recipes").rglob("config_*.yaml"))
    named = set(re.findall(r"data/[a-z]+/[a-z]+_scored\.jsonl", configs))
    assert named <= set(written), named - set(written)
    margins = []
    for rel, path in written.items():
        assert path == tmp_path / rel
        groups = read_groups(path)
        assert 12 <= len(groups) <= 24
        for g in groups:
            assert len(g.passages) == len(g.scores) == len(g.labels) <= 8 and sum(g.labels) >= 1
            assert all(math.isfinite(s) for s in g.scores)
            pos = [s for s, y in zip(g.scores, g.labels) if y]
            neg = [s for s, y in zip(g.scores, g.labels) if not y]
            margins.append(sum(pos) / len(pos) - sum(neg) / len(neg))
    assert sum(margins) / len(margins) > 0  # positives score higher on average
    assert min(margins) < sum(margins) / len(margins)  # ... with noise
    assert write_scored_mteb_files(tmp_path / "again")  # deterministic:
    assert all((tmp_path / "again" / rel).read_text() == written[rel].read_text() for rel in SCORED_FILES)


def test_mteb_rows_files(tmp_path):
    from hf_distill.data import read_groups

    written = write_mteb_rows_files(tmp_path)
    assert set(written) == {task for task, _ in MTEB_DATASETS.values()}
    for task, path in written.items():
        assert path == tmp_path / "data" / task / "test.jsonl"
        groups = read_groups(path, require_scores=False)
        assert [g.query for g in groups] == [r["query"] for r in mteb_rows(task, "test")]
        assert all(g.scores is None and sum(g.labels) >= 1 for g in groups)
