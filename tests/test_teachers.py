"""Teacher scoring: prompts, the three teachers against their references, batching, dedup and resume logic."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_distill.data import RankingGroup, read_groups
from hf_distill.errors import ConfigError
from hf_distill.prompts import (
    DEFAULT_INSTRUCTION,
    QWEN3_RERANKER_PREFIX,
    QWEN3_RERANKER_SUFFIX,
    Qwen3RerankerPrompt,
    qwen3_embedding_query,
    yes_no_token_ids,
)
from hf_distill.teachers import (
    EmbeddingTeacher,
    ResumeMismatchError,
    Teacher,
    TeacherConfigError,
    load_teacher,
    plan_batches,
    pool,
    read_sentence_transformers_config,
    score_groups,
    score_to_file,
)
from hf_distill.teachers.runner import partial_dir_for, record_dtype

from conftest import small_groups
from tiny_models import build_minilm_cross_encoder

QUICKSTART = Path(__file__).resolve().parents[1] / "recipes/quickstart/data/eval_out_of_domain.jsonl"


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: small matmuls run fastest on one thread


# ---------------------------------------------------------------------------------------------------------
# prompts
# ---------------------------------------------------------------------------------------------------------


def test_qwen3_reranker_prompt_is_the_model_card_prompt(tiny_qwen3):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen3)
    prompt = Qwen3RerankerPrompt(tokenizer, max_length=512)
    [ids] = prompt.encode([("what is umask", "umask sets the file mode creation mask")])

    expected_text = (
        "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
        'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
        f"<Instruct>: {DEFAULT_INSTRUCTION}\n<Query>: what is umask\n<Document>: umask sets the file mode creation mask"
        "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    assert tokenizer.decode(ids) == expected_text
    assert ids[: len(prompt.prefix_ids)] == tokenizer.encode(QWEN3_RERANKER_PREFIX, add_special_tokens=False)
    assert ids[-len(prompt.suffix_ids) :] == tokenizer.encode(QWEN3_RERANKER_SUFFIX, add_special_tokens=False)


def test_truncation_cuts_the_document_and_keeps_the_prompt_frame(tiny_qwen3):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen3)
    prompt = Qwen3RerankerPrompt(tokenizer, instruction="Find the man page", max_length=120)
    [ids] = prompt.encode([("copy", "copy files " * 200)])
    assert len(ids) == 120
    assert ids[: len(prompt.prefix_ids)] == prompt.prefix_ids
    assert ids[-len(prompt.suffix_ids) :] == prompt.suffix_ids
    assert "<Instruct>: Find the man page\n<Query>: copy\n<Document>: copy files" in tokenizer.decode(ids)

    with pytest.raises(ValueError, match="raise max_length"):
        Qwen3RerankerPrompt(tokenizer, max_length=len(prompt.prefix_ids) + len(prompt.suffix_ids))


def test_left_padding_puts_every_answer_slot_in_the_last_column(tiny_qwen3):
    from transformers import AutoTokenizer

    prompt = Qwen3RerankerPrompt(AutoTokenizer.from_pretrained(tiny_qwen3), max_length=512)
    ids = prompt.encode([("q", "short"), ("q", "a much longer document about the linux kernel " * 3)])
    batch = prompt.pad(ids)
    assert batch["input_ids"][:, -len(prompt.suffix_ids) :].tolist() == [prompt.suffix_ids] * 2
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][1].all()
    assert batch["position_ids"][0, -1] == len(ids[0]) - 1  # positions count real tokens only


def test_qwen3_embedding_query_format():
    assert qwen3_embedding_query("what is umask", "Given a man page query") == (
        "Instruct: Given a man page query\nQuery:what is umask"
    )


# ---------------------------------------------------------------------------------------------------------
# teachers against reference computations
# ---------------------------------------------------------------------------------------------------------


def test_qwen3_reranker_scores_equal_the_model_card_computation(tiny_qwen3):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    groups = small_groups()
    teacher = load_teacher("qwen3_reranker", tiny_qwen3, max_length=256, device="cpu")
    # A budget of ~2 prompts per batch: several batches, left padding inside each.
    scores = score_groups(teacher, groups, max_tokens_per_batch=400, progress=False)

    # The card's way: tokenizer.pad (left) and the full [B, L, vocab] logits, no position ids.
    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen3)
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen3).eval()
    yes, no = tokenizer.convert_tokens_to_ids("yes"), tokenizer.convert_tokens_to_ids("no")
    prompt = Qwen3RerankerPrompt(tokenizer, max_length=256)
    for group, group_scores in zip(groups, scores):
        inputs = tokenizer.pad(
            {"input_ids": prompt.encode([(group.query, p) for p in group.passages])}, padding=True, return_tensors="pt"
        )
        with torch.no_grad():
            logits = model(**inputs).logits[:, -1, :]
        reference = (logits[:, yes] - logits[:, no]).tolist()
        assert group_scores == pytest.approx(reference, abs=1e-5)
    assert np.std([s for g in scores for s in g]) > 0.1  # the check above compares scores that differ
    # The same (query, passage) in two groups gets the same score.
    assert scores[0][0] == scores[2][1]


def test_yes_no_token_ids_are_the_single_answer_tokens(tiny_qwen3):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen3)
    yes, no = yes_no_token_ids(tokenizer)
    assert tokenizer.convert_ids_to_tokens([yes, no]) == ["yes", "no"]


def test_embedding_teacher_equals_sentence_transformers_encode(minilm_path):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import cos_sim

    groups = [
        RankingGroup(g.query, g.passages[:4], None, g.labels[:4])
        for g in read_groups(QUICKSTART, require_scores=False)[:3]
    ]
    teacher = load_teacher("embedding", str(minilm_path), device="cpu")
    # Read from the checkpoint's own files: 1_Pooling (mean), 2_Normalize, sentence_bert_config (256).
    assert (teacher.pooling, teacher.max_length, teacher.query_prefix) == ("mean", 256, "")
    scores = score_groups(teacher, groups, max_tokens_per_batch=1024, progress=False)

    model = SentenceTransformer(str(minilm_path), device="cpu")
    for group, group_scores in zip(groups, scores):
        query = model.encode([group.query], convert_to_tensor=True)
        passages = model.encode(group.passages, convert_to_tensor=True)
        assert group_scores == pytest.approx(cos_sim(query, passages)[0].tolist(), abs=1e-5)


def test_cross_encoder_teacher_equals_crossencoder_predict(minilm_path, tmp_path):
    from sentence_transformers import CrossEncoder

    path = build_minilm_cross_encoder(str(minilm_path), tmp_path / "minilm-ce")
    groups = [
        RankingGroup(g.query, g.passages[:3], None, None) for g in read_groups(QUICKSTART, require_scores=False)[:3]
    ]
    teacher = load_teacher("cross_encoder", path, max_length=128, device="cpu")
    scores = score_groups(teacher, groups, max_tokens_per_batch=512, progress=False)

    reference = CrossEncoder(path, max_length=128, device="cpu", activation_fn=torch.nn.Identity())
    for group, group_scores in zip(groups, scores):
        expected = reference.predict([(group.query, p) for p in group.passages], activation_fn=torch.nn.Identity())
        assert group_scores == pytest.approx(expected.tolist(), abs=1e-5)


def test_cross_encoder_with_two_labels_is_refused(minilm_path, tmp_path):
    from transformers import AutoTokenizer, BertConfig

    BertConfig(num_labels=2).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(tmp_path)
    with pytest.raises(TeacherConfigError, match="num_labels=1"):
        load_teacher("cross_encoder", str(tmp_path))


def _sentence_transformers_dir(tmp_path, pooling_config: dict, extra_modules: list | None = None):
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.sentence_transformer.modules.Pooling",
        },
    ] + (extra_modules or [])
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(pooling_config))
    (tmp_path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 8192}))
    prompts = {
        "query": "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:",
        "document": "",
    }
    (tmp_path / "config_sentence_transformers.json").write_text(json.dumps({"prompts": prompts}))
    return str(tmp_path)


def test_sentence_transformers_config_of_a_qwen3_embedding_style_checkpoint(tmp_path):
    path = _sentence_transformers_dir(
        tmp_path,
        {"embedding_dimension": 64, "pooling_mode": "lasttoken", "include_prompt": True},
        [{"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.base.modules.Normalize"}],
    )
    config = read_sentence_transformers_config(path)
    assert (config["pooling"], config["normalize"], config["max_seq_length"]) == ("last", True, 8192)
    assert config["prompts"]["query"].endswith("\nQuery:")


def test_unsupported_sentence_transformers_modules_are_refused(tmp_path):
    path = _sentence_transformers_dir(
        tmp_path,
        {"pooling_mode_mean_tokens": True},
        [{"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}],
    )
    with pytest.raises(ConfigError, match="Dense"):
        read_sentence_transformers_config(path)


def test_embedding_teacher_needs_pooling_for_a_plain_checkpoint(tiny_qwen3):
    with pytest.raises(TeacherConfigError, match="--pooling"):
        EmbeddingTeacher(tiny_qwen3)


def test_a_plain_decoder_embedder_is_capped_at_the_cards_length(tiny_qwen3, tmp_path):
    """A plain copy of a decoder embedder reports its whole context (131k here): read at 8192 unless asked."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen3)
    tokenizer.model_max_length = 131072
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_bytes((Path(tiny_qwen3) / name).read_bytes())
    tokenizer.save_pretrained(tmp_path)
    assert EmbeddingTeacher(str(tmp_path), pooling="last", device="cpu").max_length == 8192
    assert EmbeddingTeacher(str(tmp_path), pooling="last", max_length=20000, device="cpu").max_length == 20000
    assert EmbeddingTeacher(str(tmp_path), pooling="mean", device="cpu").max_length == 131072  # only decoders
    # Pooling before widening to fp32 gives the very same last-token embeddings as widening first.
    teacher = EmbeddingTeacher(str(tmp_path), pooling="last", device="cpu", dtype="bfloat16")
    texts = ["list files", "the kernel schedules every process"]
    features = teacher._tokenize(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = teacher.model(**features).last_hidden_state
    widened_first = torch.nn.functional.normalize(pool(hidden.float(), features["attention_mask"], "last"), dim=-1)
    assert np.array_equal(teacher.score_batch(texts), widened_first.numpy())


# ---------------------------------------------------------------------------------------------------------
# batches, dedup, resume (a counting fake teacher keeps these fast)
# ---------------------------------------------------------------------------------------------------------


class CountingTeacher(Teacher):
    """Score = number of characters of query + passage; counts how often each pair was run."""

    kind = "cross_encoder"  # scores pairs

    def __init__(self, version: int = 1):
        super().__init__("counting", device="cpu")
        self.version = version
        self.runs: Counter = Counter()
        self.batch_sizes: list[int] = []

    def fingerprint(self):
        return {"kind": "counting", "version": self.version}

    def _load_model(self):
        return torch.nn.Identity()

    def lengths(self, items):
        return [len(q.split()) + len(p.split()) for q, p in items]

    def score_batch(self, items):
        self.runs.update(items)
        self.batch_sizes.append(len(items))
        return np.array([[len(q) + len(p) + 0.25] for q, p in items], dtype=np.float32)


def test_plan_batches_sorts_by_length_and_keeps_the_padded_budget():
    lengths = [5, 40, 7, 40, 12, 300, 1]
    batches = plan_batches(lengths, max_tokens_per_batch=80)
    assert sorted(int(i) for b in batches for i in b) == list(range(len(lengths)))
    assert [list(b) for b in batches] == [[5], [1, 3], [4, 2, 0, 6]]  # longest first; 300 alone over budget
    for batch in batches[1:]:
        assert len(batch) * max(lengths[i] for i in batch) <= 80


def test_each_unique_pair_is_scored_once_and_rows_keep_their_order():
    groups = small_groups()
    teacher = CountingTeacher()
    scores = score_groups(teacher, groups, max_tokens_per_batch=64, progress=False)
    assert set(teacher.runs.values()) == {1}
    assert sum(teacher.runs.values()) == 6  # 7 candidates, 6 distinct (query, passage) pairs
    assert len(teacher.batch_sizes) > 1
    for group, group_scores in zip(groups, scores):
        assert group_scores == [len(group.query) + len(p) + 0.25 for p in group.passages]


def test_score_to_file_resumes_from_a_torn_record(tmp_path):
    groups = small_groups()
    output = tmp_path / "scored.jsonl"
    reference = tmp_path / "reference.jsonl"
    score_to_file(CountingTeacher(), groups, reference, max_tokens_per_batch=64, progress=False)

    # A run that died after its first batch, in the middle of writing the second record.
    work_dir = partial_dir_for(output)
    first = CountingTeacher()
    with pytest.raises(KeyboardInterrupt):
        original = first.score_batch

        def dies_on_second_batch(items):
            if first.batch_sizes:
                raise KeyboardInterrupt
            return original(items)

        first.score_batch = dies_on_second_batch
        score_to_file(first, groups, output, max_tokens_per_batch=64, progress=False)
    records = work_dir / "scores.rank0.bin"
    done = records.stat().st_size // record_dtype(1).itemsize
    with open(records, "ab") as f:
        f.write(b"\x01\x02\x03")  # torn tail
    second = CountingTeacher()
    assert score_to_file(second, groups, output, max_tokens_per_batch=64, progress=False) == output
    assert 0 < sum(second.runs.values()) == 6 - done < 6
    assert output.read_bytes() == reference.read_bytes()
    assert not work_dir.exists()
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["passages"] for r in rows] == [g.passages for g in groups]
    assert [r["labels"] for r in rows] == [g.labels for g in groups]


def test_resume_with_other_settings_says_what_changed(tmp_path):
    groups = small_groups()
    output = tmp_path / "scored.jsonl"
    teacher = CountingTeacher()
    teacher.score_batch = lambda items: (_ for _ in ()).throw(KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        score_to_file(teacher, groups, output, progress=False)

    with pytest.raises(ResumeMismatchError, match=r"teacher\.version: 1 -> 2.*--overwrite_partial"):
        score_to_file(CountingTeacher(version=2), groups, output, progress=False)
    with pytest.raises(ResumeMismatchError, match="input groups"):
        score_to_file(CountingTeacher(), groups[:2], output, progress=False)
    assert score_to_file(CountingTeacher(version=2), groups, output, overwrite_partial=True, progress=False) == output


def test_qwen3_reranker_scorer_defaults_to_the_length_the_checkpoint_was_saved_with(tiny_qwen3, tmp_path):
    """A distilled decoder student is saved with its training max_length and must be served at it."""
    import shutil

    from transformers import AutoTokenizer

    from hf_distill.teachers.models import QWEN3_RERANKER_MAX_LENGTH, Qwen3RerankerTeacher

    student = tmp_path / "student"
    shutil.copytree(tiny_qwen3, student)
    tokenizer = AutoTokenizer.from_pretrained(student)
    tokenizer.model_max_length = 160
    tokenizer.save_pretrained(student)
    assert Qwen3RerankerTeacher(str(student), device="cpu").max_length == 160
    tokenizer.model_max_length = 131072  # the real Qwen3 tokenizers: the model card's 8192 applies
    tokenizer.save_pretrained(student)
    assert Qwen3RerankerTeacher(str(student), device="cpu").max_length == QWEN3_RERANKER_MAX_LENGTH
    assert Qwen3RerankerTeacher(str(student), device="cpu", max_length=300).max_length == 300


def _tiny_cross_encoder(directory, tokenizer_path, model_max_length=None):
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    if model_max_length is not None:
        tokenizer.model_max_length = model_max_length
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=8192, num_labels=1)  # fmt: skip
    BertForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def test_cross_encoder_length_defaults_to_1024_at_most(minilm_path, tmp_path, caplog):
    """bge-reranker-v2-m3's tokenizer says 8192; it was fine-tuned at 1024 (review item 10)."""
    long_one = _tiny_cross_encoder(tmp_path / "long", minilm_path, model_max_length=8192)
    with caplog.at_level(logging.INFO, logger="hf_distill"):
        assert load_teacher("cross_encoder", long_one, device="cpu").max_length == 1024
    assert "its tokenizer allows 8192" in caplog.text
    short = _tiny_cross_encoder(tmp_path / "short", minilm_path, model_max_length=512)
    assert load_teacher("cross_encoder", short, device="cpu").max_length == 512
    assert load_teacher("cross_encoder", long_one, device="cpu", max_length=4096).max_length == 4096


def test_flagembedding_truncation_cuts_the_query_to_three_quarters_then_only_the_passage(minilm_path, tmp_path):
    """FlagReranker.compute_score: query ids cut at 3/4 of max_length, then [CLS] q [SEP] p [SEP] with only the
    passage cut to fit. Built here from the token ids, independently of the teacher's code."""
    from transformers import AutoTokenizer

    path = _tiny_cross_encoder(tmp_path / "ce", minilm_path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    max_length = 32
    long_query = " ".join(f"question{i} about files" for i in range(20))
    long_passage = " ".join(f"passage{i} text" for i in range(40))
    pairs = [(long_query, long_passage), ("short query", long_passage), ("short query", "short passage")]
    teacher = load_teacher("cross_encoder", path, device="cpu", max_length=max_length, truncation="flagembedding")
    got = teacher._tokenize(pairs)["input_ids"]
    for (query, passage), ids in zip(pairs, got):
        q = tokenizer(query, add_special_tokens=False)["input_ids"][: max_length * 3 // 4]
        p = tokenizer(passage, add_special_tokens=False)["input_ids"][: max_length - len(q) - 3]
        assert ids == [tokenizer.cls_token_id, *q, tokenizer.sep_token_id, *p, tokenizer.sep_token_id]
    default = load_teacher("cross_encoder", path, device="cpu", max_length=max_length)._tokenize(pairs)["input_ids"]
    assert default[0] != got[0]  # longest_first cuts the long query further: another input, another score
    assert teacher.fingerprint()["truncation"] == "flagembedding"
    assert "truncation" not in load_teacher("cross_encoder", path, device="cpu").fingerprint()  # old dirs resume


def test_a_decoder_sequence_classifier_is_refused_as_a_cross_encoder_teacher(tiny_qwen3, tmp_path):
    """A one-label Qwen3ForSequenceClassification (a *-seq-cls conversion) fed tokenizer(query, passage) without
    its chat prompt gives meaningless scores (review item 11); a decoder student trained that way still scores."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from hf_distill.evaluation import load_scorer

    config = AutoConfig.from_pretrained(tiny_qwen3, num_labels=1)
    config.pad_token_id = 0
    AutoModelForSequenceClassification.from_config(config).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(tiny_qwen3).save_pretrained(tmp_path)
    with pytest.raises(TeacherConfigError, match="is a decoder .*--teacher_type qwen3_reranker"):
        load_teacher("cross_encoder", str(tmp_path), device="cpu")
    scorer = load_scorer("reranker", str(tmp_path), device="cpu", max_length=64)
    assert len(score_groups(scorer, [RankingGroup("q", ["a b", "c"], None, None)], progress=False)[0]) == 2


def test_truncation_is_refused_for_teachers_it_does_not_apply_to(tiny_qwen3):
    with pytest.raises(TeacherConfigError, match="--truncation applies to cross_encoder teachers only"):
        load_teacher("qwen3_reranker", tiny_qwen3, truncation="flagembedding")


@pytest.mark.parametrize("kind", ["qwen3_reranker", "embedding", "cross_encoder"])
def test_token_ids_are_computed_once_and_score_as_the_texts_do(kind, tiny_qwen3, minilm_path, tmp_path):
    """score_to_file tokenizes each unique item once (the length pass), keeps the ids in the work dir and builds
    every batch from them; the scores equal the in-memory path, which prepares batches from the texts."""
    if kind == "qwen3_reranker":
        path = tiny_qwen3
    elif kind == "embedding":
        path = minilm_path
    else:
        path = _tiny_cross_encoder(tmp_path / "ce", minilm_path)

    def load():
        teacher = load_teacher(kind, path, device="cpu", max_length=96, dtype="float32")
        if kind == "cross_encoder":  # an XLM-R-like tokenizer (no segment ids), as bge-reranker-v2-m3's
            teacher.tokenizer.model_input_names = ["input_ids", "attention_mask"]
        return teacher

    groups = [RankingGroup(g.query, g.passages[:5], None, None) for g in read_groups(QUICKSTART, require_scores=False)]
    groups = groups[:6] + groups[:2]  # repeated groups: their items are tokenized once too
    teacher = load()
    encoded, from_text = Counter(), Counter()
    real_encode, real_prepare = teacher.encode, teacher.prepare_batch
    teacher.encode = lambda items: encoded.update(items) or real_encode(items)
    teacher.prepare_batch = lambda items: from_text.update(items) or real_prepare(items)
    output = score_to_file(teacher, groups, tmp_path / "scored.jsonl", max_tokens_per_batch=600, progress=False)
    assert not from_text  # no batch was prepared from the texts
    assert max(encoded.values()) <= 2 and sum(encoded.values()) <= len(encoded) + 1  # once each (+1 probe)
    fresh = load()
    expected = score_groups(fresh, groups, max_tokens_per_batch=600, progress=False)
    got = [json.loads(line)["scores"] for line in output.read_text().splitlines()]
    for row, reference in zip(got, expected):
        assert row == pytest.approx(reference, abs=1e-5)
