"""DistillationTrainer end to end on tiny students: every loss trains, eval yields ranking metrics, saves serve."""

import json
import logging
import math

import datasets
import pytest
import torch

from hf_distill.errors import ConfigError
from hf_distill.metrics import ranking_metrics
from hf_distill.trainer import (
    DistillationArguments,
    EmbeddingDistillationTrainer,
    RerankerDistillationTrainer,
)

from conftest import make_groups


def _args(tmp_path, **overrides):
    values = dict(
        output_dir=str(tmp_path / "out"),
        max_steps=30,
        per_device_train_batch_size=4,
        learning_rate=3e-3,
        warmup_steps=0,
        lr_scheduler_type="constant",
        logging_steps=10,
        report_to="none",
        save_strategy="no",
        group_size=6,
        disable_tqdm=True,
        seed=0,
        pooling="cls",  # tiny encoders built from a config have no sentence-transformers files to read it from
    )
    values.update(overrides)
    return DistillationArguments(**values)


@pytest.fixture(scope="module")
def train_dataset():
    return datasets.Dataset.from_list(make_groups(num_queries=16, num_candidates=6, seed=1))


@pytest.mark.parametrize("loss", ["mse", "margin_mse", "margin_mse_triplets", "kl", "ranknet", "listnet", "lambdaloss"])
def test_reranker_student_learns_with_every_loss(tmp_path, tokenizer, tiny_reranker, train_dataset, loss):
    extra = {"margin_top_k": 2, "margin_num_negatives": 2} if loss == "margin_mse_triplets" else {}
    trainer = RerankerDistillationTrainer(
        model=tiny_reranker,
        args=_args(tmp_path, loss=loss, **extra),
        train_dataset=train_dataset,
        eval_dataset=train_dataset,
        processing_class=tokenizer,
    )
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    assert math.isfinite(after) and after < before


@pytest.mark.parametrize("loss", ["kl", "margin_mse"])
def test_embedding_student_learns(tmp_path, tokenizer, tiny_encoder, train_dataset, loss):
    trainer = EmbeddingDistillationTrainer(
        model=tiny_encoder,
        args=_args(tmp_path, loss=loss, pooling="mean"),
        train_dataset=train_dataset,
        eval_dataset=train_dataset,
        processing_class=tokenizer,
    )
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    assert after["eval_loss"] < before["eval_loss"]
    assert after["eval_spearman"] > before["eval_spearman"]


def test_evaluation_reports_ranking_metrics_and_teacher_agreement(tmp_path, tokenizer, tiny_reranker, train_dataset):
    trainer = RerankerDistillationTrainer(
        model=tiny_reranker,
        args=_args(tmp_path),
        eval_dataset={"in_domain": train_dataset},
        processing_class=tokenizer,
    )
    metrics = trainer.evaluate(train_dataset, metric_key_prefix="in_domain")
    for key in ("in_domain_map", "in_domain_mrr@10", "in_domain_ndcg@10", "in_domain_teacher_map"):
        assert 0.0 < metrics[key] <= 1.0, key
    assert -1.0 <= metrics["in_domain_spearman"] <= 1.0
    # The teacher ranks its own candidates: its MAP is that of the teacher scores, whatever the student does.
    teacher_scores = [list(row["scores"]) for row in train_dataset]
    labels = [list(row["labels"]) for row in train_dataset]
    teacher_only = ranking_metrics(teacher_scores, labels, [[True] * len(row) for row in teacher_scores])
    assert metrics["in_domain_teacher_map"] == pytest.approx(teacher_only["map"], abs=1e-6)
    predictions = trainer.predict(train_dataset)
    assert predictions.predictions.shape == (len(train_dataset), 6)  # all candidates at evaluation


def test_single_candidate_groups_are_skipped_with_one_warning(tmp_path, tokenizer, tiny_reranker, caplog):
    rows = make_groups(num_queries=8, num_candidates=4)
    rows += [{"query": "lonely", "passages": ["only one"], "scores": [1.0], "labels": [1]}] * 3
    with caplog.at_level(logging.WARNING, logger="hf_distill"):
        trainer = RerankerDistillationTrainer(
            model=tiny_reranker,
            args=_args(tmp_path, loss="listnet", max_steps=3),
            train_dataset=datasets.Dataset.from_list(rows),
            processing_class=tokenizer,
        )
    warnings = [r.getMessage() for r in caplog.records if "single candidate" in r.getMessage()]
    assert len(warnings) == 1 and "3 of 11" in warnings[0]
    assert len(trainer.train_dataset) == 8
    assert math.isfinite(trainer.train().training_loss)


def test_gradient_accumulation_matches_a_bigger_batch(tmp_path, tokenizer, train_dataset):
    from transformers import AutoModelForSequenceClassification

    from conftest import tiny_bert_config

    def run(batch, accumulation):
        torch.manual_seed(0)
        config = tiny_bert_config(tokenizer, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        model = AutoModelForSequenceClassification.from_config(config)
        args = _args(
            tmp_path,
            max_steps=1,
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=accumulation,
            train_sampling_strategy="sequential",
            group_size=None,
            learning_rate=1.0,
            optim="sgd",
        )
        RerankerDistillationTrainer(
            model=model, args=args, train_dataset=train_dataset.select(range(8)), processing_class=tokenizer
        ).train()
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    one_batch, accumulated = run(8, 1), run(4, 2)
    assert torch.allclose(one_batch, accumulated, atol=1e-5)


@pytest.mark.parametrize("kind", ["reranker", "embedding"])
def test_gradient_cache_gives_the_one_pass_gradients_with_dropout_and_accumulation(
    tmp_path, tokenizer, train_dataset, kind
):
    from transformers import AutoModel, AutoModelForSequenceClassification

    from conftest import tiny_bert_config

    def run(gradient_cache):
        torch.manual_seed(0)
        model_class = AutoModelForSequenceClassification if kind == "reranker" else AutoModel
        model = model_class.from_config(tiny_bert_config(tokenizer))
        trainer_class = RerankerDistillationTrainer if kind == "reranker" else EmbeddingDistillationTrainer
        # dropout 0.1: pass 2 must replay pass 1's masks; 96-token micro-batches: several per step
        args = _args(
            tmp_path,
            max_steps=2,
            per_device_train_batch_size=2,
            gradient_accumulation_steps=2,
            train_sampling_strategy="sequential",
            group_size=None,
            learning_rate=1.0,
            optim="sgd",
            dropout="0.1",
            micro_batch_max_tokens=96,
            gradient_cache=gradient_cache,
            logging_steps=1,
        )
        trainer = trainer_class(
            model=model, args=args, train_dataset=train_dataset.select(range(8)), processing_class=tokenizer
        )
        batch = next(iter(trainer.get_train_dataloader()))
        assert len(batch["micro_batches"]) > 2
        trainer.train()
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        return torch.cat([p.detach().flatten() for p in model.parameters()]), losses

    (one_pass, one_pass_losses), (cached, cached_losses) = run(False), run(True)
    torch.testing.assert_close(cached, one_pass, atol=2e-5, rtol=1e-4)
    assert cached_losses == pytest.approx(one_pass_losses, rel=1e-4)


def test_training_logs_the_share_of_real_tokens(tmp_path, tokenizer, tiny_reranker, train_dataset):
    trainer = RerankerDistillationTrainer(
        model=tiny_reranker,
        args=_args(tmp_path, max_steps=10, logging_steps=5),
        train_dataset=train_dataset,
        processing_class=tokenizer,
    )
    trainer.train()
    shares = [log["real_token_share"] for log in trainer.state.log_history if "real_token_share" in log]
    assert shares and all(0.5 < s <= 1.0 for s in shares)


def test_lora_student_trains_only_adapters_and_head(tmp_path, tokenizer, tiny_reranker, train_dataset):
    from peft import LoraConfig, TaskType, get_peft_model

    model = get_peft_model(
        tiny_reranker, LoraConfig(task_type=TaskType.SEQ_CLS, r=4, target_modules=["query", "value"])
    )
    frozen_before = model.base_model.model.bert.embeddings.word_embeddings.weight.detach().clone()
    trainer = RerankerDistillationTrainer(
        model=model,
        args=_args(tmp_path, max_steps=10),
        train_dataset=train_dataset,
        eval_dataset=train_dataset,
        processing_class=tokenizer,
    )
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    assert trainer.evaluate()["eval_loss"] < before
    assert torch.equal(model.base_model.model.bert.embeddings.word_embeddings.weight, frozen_before)


def test_saved_reranker_scores_identically_in_sentence_transformers(tmp_path, tokenizer, tiny_reranker, train_dataset):
    from sentence_transformers import CrossEncoder

    trainer = RerankerDistillationTrainer(
        model=tiny_reranker,
        args=_args(tmp_path, max_steps=2),
        train_dataset=train_dataset,
        processing_class=tokenizer,
    )
    trainer.train()
    trainer.save_model(str(tmp_path / "student"))
    row = train_dataset[0]
    pairs = [(row["query"], p) for p in row["passages"]]
    ours = trainer.predict(train_dataset.select([0])).predictions[0]
    theirs = CrossEncoder(str(tmp_path / "student"), activation_fn=torch.nn.Identity()).predict(pairs)
    assert ours == pytest.approx(list(theirs), abs=1e-5)


def test_saved_embedding_student_loads_in_sentence_transformers(tmp_path, tokenizer, tiny_encoder, train_dataset):
    from sentence_transformers import SentenceTransformer

    trainer = EmbeddingDistillationTrainer(
        model=tiny_encoder,
        args=_args(tmp_path, max_steps=2, pooling="mean", max_length=128),
        train_dataset=train_dataset,
        processing_class=tokenizer,
    )
    trainer.train()
    trainer.save_model(str(tmp_path / "student"))
    st = SentenceTransformer(str(tmp_path / "student"))
    row = train_dataset[0]
    q, docs = st.encode([row["query"]]), st.encode(row["passages"])
    theirs = (q @ docs.T)[0]
    ours = trainer.predict(train_dataset.select([0])).predictions[0]
    assert ours == pytest.approx(list(theirs), abs=1e-5)
    assert st.max_seq_length == 128


def test_wrong_dataset_columns_name_the_fix(tmp_path, tokenizer, tiny_reranker):
    bad = datasets.Dataset.from_list([{"question": "q", "docs": ["a", "b"]}])
    with pytest.raises(ValueError, match="load_ranking_dataset"):
        RerankerDistillationTrainer(
            model=tiny_reranker, args=_args(tmp_path), train_dataset=bad, processing_class=tokenizer
        )


def test_unknown_loss_lists_the_registered_ones(tmp_path, tokenizer, tiny_reranker):
    with pytest.raises((KeyError, ValueError), match="listnet"):
        RerankerDistillationTrainer(model=tiny_reranker, args=_args(tmp_path, loss="nope"), processing_class=tokenizer)


def test_auto_teacher_temperature_is_measured_on_the_training_scores(tmp_path, tokenizer, tiny_reranker):
    from hf_distill.losses import teacher_score_spread

    groups = make_groups(num_queries=8, num_candidates=6, seed=3)
    for group in groups:  # a cosine-like teacher: scores in [-1, 1]
        group["scores"] = [s / 10 for s in group["scores"]]
    data = datasets.Dataset.from_list(groups)
    args = _args(tmp_path, loss="listnet", teacher_temperature="auto")
    trainer = RerankerDistillationTrainer(
        model=tiny_reranker, args=args, train_dataset=data, processing_class=tokenizer
    )
    expected = teacher_score_spread([g["scores"] for g in groups])
    assert trainer.loss_fn.options["teacher_temperature"] == pytest.approx(expected)
    # A number is used as given, whether it comes as a float or as a command-line string.
    assert _args(tmp_path, teacher_temperature="0.5").loss_options()["teacher_temperature"] == 0.5
    with pytest.raises(ValueError, match="teacher_temperature"):
        _args(tmp_path, teacher_temperature="warm").loss_options()


def test_auto_student_temperature_suits_the_student_scores(tmp_path, tokenizer, tiny_reranker, tiny_encoder):
    data = datasets.Dataset.from_list(make_groups(num_queries=4, num_candidates=4, seed=5))
    reranker = RerankerDistillationTrainer(
        model=tiny_reranker, args=_args(tmp_path, loss="listnet"), train_dataset=data, processing_class=tokenizer
    )
    assert reranker.loss_fn.options["student_temperature"] == 1.0  # logits: unbounded
    embedding = EmbeddingDistillationTrainer(
        model=tiny_encoder, args=_args(tmp_path, loss="kl"), train_dataset=data, processing_class=tokenizer
    )
    assert embedding.loss_fn.options["student_temperature"] == 0.05  # cosines in [-1, 1]
    scaled = EmbeddingDistillationTrainer(
        model=tiny_encoder,
        args=_args(tmp_path, loss="kl", similarity_scale=20.0),
        train_dataset=data,
        processing_class=tokenizer,
    )
    assert scaled.loss_fn.options["student_temperature"] == 1.0  # the scale already spreads them


def test_dropout_is_off_while_training_by_default_and_the_saved_config_keeps_its_own(
    tmp_path, tokenizer, tiny_reranker
):
    data = datasets.Dataset.from_list(make_groups(num_queries=4, num_candidates=4, seed=5))
    trainer = RerankerDistillationTrainer(
        model=tiny_reranker, args=_args(tmp_path), train_dataset=data, processing_class=tokenizer
    )
    dropouts = [m for m in trainer.model.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts and all(m.p == 0.0 for m in dropouts)
    trainer.model.train()
    features = trainer.get_train_dataloader().collate_fn(data.to_list()[:2])["micro_batches"][0]
    with torch.no_grad():  # no dropout: two training-mode forwards agree
        torch.testing.assert_close(trainer.model(**features).logits, trainer.model(**features).logits)
    trainer.save_model(str(tmp_path / "saved"))
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert saved["hidden_dropout_prob"] == 0.1 and saved["attention_probs_dropout_prob"] == 0.1


def test_dropout_keep_leaves_the_checkpoints_and_a_number_sets_every_kind(
    tmp_path, tokenizer, tiny_reranker, tiny_qwen3
):
    from transformers import AutoModelForCausalLM

    from hf_distill.students import set_dropout

    data = datasets.Dataset.from_list(make_groups(num_queries=4, num_candidates=4, seed=5))
    RerankerDistillationTrainer(
        model=tiny_reranker, args=_args(tmp_path, dropout="keep"), train_dataset=data, processing_class=tokenizer
    )
    assert {m.p for m in tiny_reranker.modules() if isinstance(m, torch.nn.Dropout)} == {0.1}
    # decoders pass a float to the attention kernel instead of using an nn.Dropout module
    qwen = AutoModelForCausalLM.from_pretrained(tiny_qwen3)
    assert set_dropout(qwen, 0.2) >= qwen.config.num_hidden_layers
    assert {layer.self_attn.attention_dropout for layer in qwen.model.layers} == {0.2}
    for bad in ("1.5", "lots"):
        with pytest.raises(ValueError, match="--dropout must be a probability"):
            _args(tmp_path, dropout=bad).dropout_probability()


# --- the users' path: findings of shared/reviews/core.md -------------------------------------------------------------


def test_teacher_scores_stay_fp32_when_deepspeed_casts_float_inputs(tmp_path, tokenizer, tiny_reranker, train_dataset):
    """Trainer._prepare_input casts every float tensor to DeepSpeed's bf16; teacher scores are targets, not inputs."""
    from types import SimpleNamespace

    trainer = RerankerDistillationTrainer(
        model=tiny_reranker, args=_args(tmp_path), train_dataset=train_dataset, processing_class=tokenizer
    )
    # What an accelerate DeepSpeed plugin with bf16 looks like to Trainer._prepare_input.
    plugin = SimpleNamespace(hf_ds_config=SimpleNamespace(dtype=lambda: torch.bfloat16))
    accelerator, trainer.accelerator = (
        trainer.accelerator,
        SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=plugin)),
    )
    trainer.is_deepspeed_enabled = True
    try:
        teacher = torch.tensor([[0.5512, 0.5517, 0.5523]])  # a cosine teacher: bf16 would make them one value
        inputs = trainer._prepare_inputs({"teacher_scores": teacher.clone(), "other": torch.ones(1, 3)})
    finally:
        trainer.accelerator, trainer.is_deepspeed_enabled = accelerator, False
    assert inputs["other"].dtype == torch.bfloat16  # the Trainer's cast does run here
    assert inputs["teacher_scores"].dtype == torch.float32
    assert torch.equal(inputs["teacher_scores"], teacher)


def test_dropout_zero_leaves_lora_dropout_at_its_configured_value(tmp_path, tokenizer, tiny_reranker, train_dataset):
    from peft import LoraConfig, TaskType, get_peft_model

    model = get_peft_model(
        tiny_reranker, LoraConfig(task_type=TaskType.SEQ_CLS, r=4, lora_dropout=0.05, target_modules=["query", "value"])
    )
    RerankerDistillationTrainer(
        model=model, args=_args(tmp_path, dropout="0"), train_dataset=train_dataset, processing_class=tokenizer
    )
    lora = [m.p for name, m in model.named_modules() if "lora_dropout" in name and isinstance(m, torch.nn.Dropout)]
    other = [m.p for name, m in model.named_modules() if "lora_dropout" not in name and isinstance(m, torch.nn.Dropout)]
    assert lora and set(lora) == {0.05}
    assert other and set(other) == {0.0}


def test_hard_label_temperature_auto_follows_the_student_temperature(
    tmp_path, tokenizer, tiny_reranker, tiny_encoder, train_dataset
):
    embedder = EmbeddingDistillationTrainer(
        model=tiny_encoder,
        args=_args(tmp_path, pooling="mean", hard_label_weight=0.5),
        train_dataset=train_dataset,
        processing_class=tokenizer,
    )
    assert embedder.loss_fn.hard_label_temperature == pytest.approx(0.05)  # cosines: the sharp student softmax
    reranker = RerankerDistillationTrainer(
        model=tiny_reranker,
        args=_args(tmp_path, hard_label_weight=0.5, loss="margin_mse"),
        train_dataset=train_dataset,
        processing_class=tokenizer,
    )
    assert reranker.loss_fn.hard_label_temperature == 1.0  # logits
    fixed = RerankerDistillationTrainer(
        model=tiny_reranker,
        args=_args(tmp_path, hard_label_weight=0.5, hard_label_temperature="0.3"),
        train_dataset=train_dataset,
        processing_class=tokenizer,
    )
    assert fixed.loss_fn.hard_label_temperature == pytest.approx(0.3)


def test_normalised_dot_scores_count_as_bounded_for_the_auto_student_temperature(tmp_path):
    normalised_dot = _args(tmp_path, similarity="dot", normalize_embeddings=True)
    raw_dot = _args(tmp_path, similarity="dot", normalize_embeddings=False)
    assert EmbeddingDistillationTrainer.auto_student_temperature(normalised_dot) == 0.05
    assert EmbeddingDistillationTrainer.auto_student_temperature(raw_dot) == 1.0


def test_pooling_auto_without_sentence_transformers_files_asks_for_pooling(
    tmp_path, tokenizer, tiny_encoder, train_dataset
):
    from hf_distill.cli import ConfigError

    tiny_encoder.config._name_or_path = str(tmp_path)  # a plain transformers folder: no 1_Pooling
    with pytest.raises(ConfigError, match="--pooling cls, mean or last"):
        EmbeddingDistillationTrainer(
            model=tiny_encoder,
            args=_args(tmp_path, pooling="auto"),
            train_dataset=train_dataset,
            processing_class=tokenizer,
        )


def test_saved_reranker_is_served_at_the_trained_max_length(tmp_path, tokenizer, tiny_reranker, train_dataset):
    from sentence_transformers import CrossEncoder

    trainer = RerankerDistillationTrainer(
        model=tiny_reranker,
        args=_args(tmp_path, max_steps=1, max_length=48),
        train_dataset=train_dataset,
        processing_class=tokenizer,
    )
    trainer.train()
    trainer.save_model(str(tmp_path / "saved"))
    assert CrossEncoder(str(tmp_path / "saved")).max_seq_length == 48


def test_candidate_samples_depend_on_seed_epoch_and_group_only(tokenizer):
    from hf_distill.collators import GROUP_INDEX_COLUMN, CrossEncoderCollator

    rows = [dict(row, **{GROUP_INDEX_COLUMN: i}) for i, row in enumerate(make_groups(4, 12, seed=3))]

    def sample(epoch, rows):
        collator = CrossEncoderCollator(tokenizer, group_size=5, top_fraction=0.2, seed=7)
        collator.set_epoch(epoch)
        batch = collator(rows)
        return [
            sorted(t for t, keep in zip(teacher.tolist(), mask.tolist()) if keep)
            for teacher, mask in zip(batch["teacher_scores"], batch["candidate_mask"])
        ]

    import random

    first = sample(0, rows)
    random.seed(12345)  # whatever the global state, e.g. after a resume
    assert sample(0, rows) == first
    assert sample(0, rows[2:]) == first[2:]  # a group's sample does not depend on what was collated before it
    assert sample(1, rows) != first  # a new epoch draws anew


def test_length_grouped_permutation_is_drawn_from_seed_and_epoch(tmp_path, tokenizer, tiny_reranker, train_dataset):
    from hf_distill.trainer import EpochSeededLengthGroupedSampler

    trainer = RerankerDistillationTrainer(
        model=tiny_reranker,
        args=_args(tmp_path, per_device_train_batch_size=2, train_sampling_strategy="group_by_length"),
        train_dataset=train_dataset,
        processing_class=tokenizer,
    )
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, EpochSeededLengthGroupedSampler)
    sampler.set_epoch(1)
    epoch_one = list(sampler)
    torch.manual_seed(999)  # the global RNG no longer matters
    assert list(sampler) == epoch_one
    sampler.set_epoch(2)
    assert list(sampler) != epoch_one and sorted(list(sampler)) == sorted(epoch_one)


def test_eval_set_with_labels_only_is_measured_without_teacher_columns(
    tmp_path, tokenizer, tiny_reranker, train_dataset
):
    labels_only = train_dataset.remove_columns("scores")
    trainer = RerankerDistillationTrainer(
        model=tiny_reranker,
        args=_args(tmp_path),
        train_dataset=train_dataset,
        eval_dataset={"scored": train_dataset, "mteb": labels_only},
        processing_class=tokenizer,
    )
    metrics = trainer.evaluate()
    assert {"eval_mteb_map", "eval_mteb_mrr@10", "eval_mteb_ndcg@10"} <= metrics.keys()
    assert not [
        key
        for key in metrics
        if key.startswith("eval_mteb_") and any(word in key for word in ("teacher", "spearman", "kendall", "loss"))
    ]
    assert metrics["eval_mteb_map"] == pytest.approx(metrics["eval_scored_map"])  # same student, same labels
    assert "eval_scored_spearman" in metrics and "eval_scored_loss" in metrics


def test_total_flos_counts_the_student_forwards(tmp_path, tokenizer, tiny_reranker, train_dataset):
    trainer = RerankerDistillationTrainer(
        model=tiny_reranker, args=_args(tmp_path, max_steps=2), train_dataset=train_dataset, processing_class=tokenizer
    )
    trainer.train()
    batch = next(iter(trainer.get_train_dataloader()))
    embeddings = {id(m.weight) for m in tiny_reranker.modules() if isinstance(m, torch.nn.Embedding)}
    parameters = sum(p.numel() for p in tiny_reranker.parameters() if id(p) not in embeddings)
    assert 0 < parameters < tiny_reranker.num_parameters()
    assert trainer.state.total_flos > 0
    assert trainer.floating_point_ops(batch) == 6 * parameters * int(batch["num_padded_tokens"])


def test_without_keeping_labelled_positives_the_teacher_rank_alone_picks_candidates():
    from hf_distill.collators import CandidateSampler

    scores = [9.0, 8.0, 7.0, 6.0, 0.5]
    labels = [0, 0, 0, 0, 1]  # a labelled positive the teacher ranks last
    assert CandidateSampler(group_size=3, top_fraction=1.0).select(scores, labels) == [0, 1, 4]
    assert CandidateSampler(group_size=3, top_fraction=1.0, keep_labelled_positives=False).select(scores, labels) == [
        0,
        1,
        2,
    ]


def test_metric_warnings_name_each_eval_set_of_a_dict(tmp_path, tokenizer, tiny_reranker, train_dataset, caplog):
    no_positive = train_dataset.map(lambda row: {"labels": [0] * len(row["labels"])})
    trainer = RerankerDistillationTrainer(
        model=tiny_reranker,
        args=_args(tmp_path),
        train_dataset=train_dataset,
        eval_dataset={"in_domain": train_dataset, "unlabelled": no_positive},
        processing_class=tokenizer,
    )
    with caplog.at_level(logging.WARNING, logger="hf_distill"):
        trainer.evaluate()  # the Trainer's own loop over the dict, as in periodic evaluation
    assert any("on eval set 'unlabelled'" in record.getMessage() for record in caplog.records)


def test_persistent_dataloader_workers_are_refused_they_would_freeze_the_samples(
    tmp_path, tokenizer, tiny_reranker, train_dataset
):
    from hf_distill.cli import ConfigError

    with pytest.raises(ConfigError, match="dataloader_persistent_workers"):
        RerankerDistillationTrainer(
            model=tiny_reranker,
            args=_args(tmp_path, dataloader_num_workers=1, dataloader_persistent_workers=True),
            train_dataset=train_dataset,
            processing_class=tokenizer,
        )


def test_pooling_auto_never_guesses_when_the_pooling_config_is_missing(
    tmp_path, tokenizer, tiny_encoder, train_dataset
):
    from hf_distill.cli import ConfigError

    checkpoint = tmp_path / "partial"
    tiny_encoder.save_pretrained(checkpoint)
    (checkpoint / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            ]
        )
    )  # 1_Pooling/config.json missing, as in a partly downloaded cache
    tiny_encoder.config._name_or_path = str(checkpoint)
    with pytest.raises(ConfigError, match="--pooling cls, mean or last"):
        EmbeddingDistillationTrainer(
            model=tiny_encoder,
            args=_args(tmp_path, pooling="auto"),
            train_dataset=train_dataset,
            processing_class=tokenizer,
        )


def test_a_fresh_head_trains_at_least_min_train_steps_and_says_so(tmp_path, tokenizer, train_dataset, caplog):
    from peft import LoraConfig, get_peft_model

    from hf_distill.model_loading import ModelArguments, load_student
    from hf_distill.students import has_fresh_head
    from hf_distill.training_args import FRESH_HEAD_MIN_TRAIN_STEPS

    from conftest import save_tiny_checkpoint

    encoder = save_tiny_checkpoint(tokenizer, tmp_path / "encoder", kind="encoder")
    reranker = save_tiny_checkpoint(tokenizer, tmp_path / "reranker", kind="reranker")
    fresh, _ = load_student("reranker", ModelArguments(model_name_or_path=encoder))
    trained, _ = load_student("reranker", ModelArguments(model_name_or_path=reranker))
    assert has_fresh_head(fresh) and not has_fresh_head(trained)
    lora = get_peft_model(fresh, LoraConfig(r=2, target_modules=["query"], modules_to_save=["classifier"]))
    assert has_fresh_head(lora)  # PEFT wrappers forward the lookup to the model they hold
    assert "hf_distill_fresh_head" not in fresh.config.to_dict()  # never written to the saved config

    def trainer_for(model, **overrides):
        epochs = dict(max_steps=-1, num_train_epochs=1, lr_scheduler_type="linear")
        return RerankerDistillationTrainer(
            model=model,
            args=_args(tmp_path, **{**epochs, **overrides}),
            train_dataset=train_dataset,
            processing_class=tokenizer,
        )

    with caplog.at_level(logging.WARNING, logger="hf_distill"):
        lengthened = trainer_for(fresh)
    assert lengthened.planned_train_steps() == 4  # 16 groups, 4 per step, 1 epoch
    assert lengthened.args.max_steps == FRESH_HEAD_MIN_TRAIN_STEPS
    assert "16 training groups give 4 optimizer steps" in caplog.text and "--min_train_steps 0" in caplog.text
    assert trainer_for(fresh, min_train_steps="0").args.max_steps == -1
    assert trainer_for(fresh, max_steps=3).args.max_steps == 3  # an explicit length wins
    assert trainer_for(trained).args.max_steps == -1  # auto: only a fresh head is lengthened
    assert trainer_for(fresh, num_train_epochs=30).args.max_steps == -1  # 120 planned steps: long enough

    # An explicit minimum applies to any student: the data repeats and the schedule spans every step.
    trainer = trainer_for(trained, min_train_steps="7")
    trainer.train()
    assert trainer.state.global_step == 7 and trainer.state.epoch > 1
    with pytest.raises(ConfigError, match="--min_train_steps must be a whole number"):
        trainer_for(trained, min_train_steps="many")
