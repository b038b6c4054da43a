"""recipes/reranker.py and recipes/embedding.py end to end, the way users run them: YAML + flags, LoRA merged on
save, bad input, resume after a kill, and the 2-process DDP / DeepSpeed ZeRO-3 launches on CPU."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import free_port, make_groups, save_tiny_checkpoint

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)}
QUICK = ["--max_length", "64", "--per_device_train_batch_size", "4", "--report_to", "none", "--logging_steps", "1"]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tokenizer):
    """A tiny BERT reranker checkpoint, a tiny bi-encoder checkpoint, and scored train / eval files."""
    root = tmp_path_factory.mktemp("recipes")
    reranker = save_tiny_checkpoint(tokenizer, root / "tiny-reranker", "reranker")
    encoder = save_tiny_checkpoint(tokenizer, root / "tiny-encoder", "encoder")
    return {
        "root": root,
        "reranker": reranker,
        "encoder": encoder,
        "train": str(_write_jsonl(root / "train.jsonl", make_groups(16, 6, seed=1))),
        "eval": str(_write_jsonl(root / "eval_in_domain.jsonl", make_groups(6, 6, seed=2))),
    }


def _run_recipe(kind: str, *args: str, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    script = str(REPO / "recipes" / f"{kind}.py")
    command = (launcher or [sys.executable]) + [script, *args]
    return subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)


def _launcher(*options: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
        *options,
    ]


def _state_dict(path: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(os.path.join(path, "model.safetensors"))


def test_reranker_recipe_from_yaml_with_flag_overrides_writes_a_servable_student(workspace, tmp_path):
    from sentence_transformers import CrossEncoder

    from hf_distill.recipe import run_distillation

    config = tmp_path / "config.yaml"
    config.write_text(
        f"model_name_or_path: {workspace['reranker']}\ntrain_file: {workspace['train']}\n"
        f"eval_file: [{workspace['eval']}]\noutput_dir: {tmp_path / 'from-yaml'}\n"
        "loss: margin_mse\nlearning_rate: 1e-3\nmax_steps: 2\nsave_strategy: 'no'\n",
        encoding="utf-8",
    )
    output_dir = tmp_path / "student"
    report = run_distillation("reranker", ["--config", str(config), "--output_dir", str(output_dir), *QUICK])

    assert report["loss"] == "margin_mse" and report["max_steps"] == 2  # from the YAML file
    assert not (tmp_path / "from-yaml").exists()  # the flag won over the YAML value
    before, after = report["metrics_before"]["eval_in_domain"], report["metrics_after"]["eval_in_domain"]
    assert {"map", "mrr@10", "ndcg@10", "spearman"} <= before.keys() and after["map"] != before["map"]
    saved = json.loads((output_dir / "distillation_report.json").read_text())
    assert saved["metrics_after"]["eval_in_domain"]["map"] == pytest.approx(after["map"])
    assert (output_dir / "model.safetensors").exists() and not (output_dir / "pytorch_model.bin").exists()

    # The student serves as a plain cross-encoder: same scores as the trained model's raw logits.
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    pairs = [("linux kernel memory", "kernel memory of a linux process"), ("copy file", "print the manual page")]
    model = AutoModelForSequenceClassification.from_pretrained(output_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    with torch.no_grad():
        raw = model(**tokenizer([q for q, _ in pairs], [p for _, p in pairs], padding=True, return_tensors="pt"))
    served = CrossEncoder(str(output_dir), activation_fn=torch.nn.Identity()).predict(pairs)
    assert served == pytest.approx(raw.logits.view(-1).tolist(), abs=1e-5)


def test_unknown_yaml_key_is_one_clear_error(workspace, tmp_path):
    config = tmp_path / "typo.yaml"
    config.write_text(f"model_name_or_path: {workspace['reranker']}\nlearnin_rate: 1e-4\n", encoding="utf-8")
    result = _run_recipe("reranker", "--config", str(config), "--output_dir", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "typo.yaml: unknown field 'learnin_rate'. Did you mean 'learning_rate'?" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "flag, message",
    [
        (("--dropout", "0.1x"), "--dropout must be a probability"),
        (("--teacher_temperature", "warm"), "--teacher_temperature must be a positive number or 'auto'"),
        (("--min_train_steps", "many"), "--min_train_steps must be a whole number of steps >= 0 or 'auto'"),
    ],
)
def test_bad_option_value_is_one_clear_error_before_loading(workspace, tmp_path, flag, message):
    result = _run_recipe(
        "reranker",
        "--model_name_or_path",
        workspace["reranker"],
        "--train_file",
        workspace["train"],
        "--output_dir",
        str(tmp_path / "out"),
        *flag,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and message in result.stderr
    assert not (tmp_path / "out").exists()


def test_malformed_train_file_stops_before_anything_is_overwritten(workspace, tmp_path):
    bad = tmp_path / "bad.jsonl"
    rows = make_groups(3, 4)
    lines = [json.dumps(r) for r in rows]
    lines[1] = lines[1].replace('"scores": [', '"scores": [NaN, ')
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    output_dir = tmp_path / "existing-student"
    output_dir.mkdir()
    (output_dir / "model.safetensors").write_bytes(b"previous run")

    result = _run_recipe(
        "reranker",
        "--model_name_or_path",
        workspace["reranker"],
        "--train_file",
        str(bad),
        "--output_dir",
        str(output_dir),
        *QUICK,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    message = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(message) == 1 and f"{bad}:2" in message[0] and "scores" in message[0]
    assert (output_dir / "model.safetensors").read_bytes() == b"previous run"


def test_embedding_recipe_with_lora_saves_a_merged_sentence_transformer(workspace, tmp_path):
    from sentence_transformers import SentenceTransformer

    from hf_distill.recipe import run_distillation

    output_dir = tmp_path / "embedder"
    run_distillation(
        "embedding",
        [
            "--model_name_or_path",
            workspace["encoder"],
            "--train_file",
            workspace["train"],
            "--output_dir",
            str(output_dir),
            "--pooling",
            "mean",
            "--use_peft",
            "--lora_r",
            "4",
            "--lora_target_modules",
            "query",
            "value",
            "--learning_rate",
            "1e-2",
            "--max_steps",
            "3",
            "--save_strategy",
            "no",
            "--evaluate_before_training",
            "false",
            *QUICK,
        ],
    )
    merged = _state_dict(str(output_dir))
    assert not any("lora" in key for key in merged), "the saved student must be a plain (merged) checkpoint"
    base = _state_dict(workspace["encoder"])
    changed = [k for k in base if "attention.self.query.weight" in k and not torch.equal(base[k], merged[k])]
    assert changed, "LoRA updates must be merged into the saved query projections"

    # SentenceTransformer reads the pooling / normalisation the student was trained with.
    texts = ["list directory contents", "remove a file from the archive"]
    st = SentenceTransformer(str(output_dir), device="cpu")
    assert st[1].get_config_dict()["pooling_mode"] == "mean"
    from transformers import AutoModel, AutoTokenizer

    from hf_distill.students import BiEncoderScorer

    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    with torch.no_grad():
        ours = BiEncoderScorer(pooling="mean").embed(
            AutoModel.from_pretrained(output_dir).eval(), tokenizer(texts, padding=True, return_tensors="pt")
        )
    assert torch.allclose(torch.from_numpy(st.encode(texts)), ours, atol=1e-5)


def test_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one(workspace, tmp_path):
    common = [
        "--model_name_or_path",
        workspace["reranker"],
        "--train_file",
        workspace["train"],
        "--loss",
        "listnet",
        "--group_size",
        "4",
        "--learning_rate",
        "1e-3",
        "--max_steps",
        "8",
        "--save_strategy",
        "steps",
        "--save_steps",
        "4",
        "--evaluate_before_training",
        "false",
        "--dataloader_num_workers",
        "0",
        *QUICK,
    ]
    whole = tmp_path / "whole"
    assert _run_recipe("reranker", *common, "--output_dir", str(whole)).returncode == 0

    # Kill a second run once its first checkpoint is complete, then resume it.
    killed = tmp_path / "killed"
    script = str(REPO / "recipes" / "reranker.py")
    process = subprocess.Popen(
        [sys.executable, script, *common, "--output_dir", str(killed)],
        cwd=REPO,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoint = killed / "checkpoint-4"
    deadline = time.monotonic() + 300
    while not (checkpoint / "trainer_state.json").exists() and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    for later in killed.glob("checkpoint-*"):
        if later != checkpoint:  # if the run got further than step 4 before the kill, resume from step 4 anyway
            subprocess.run(["rm", "-rf", str(later)], check=True)
    assert not (killed / "model.safetensors").exists()

    resumed = _run_recipe("reranker", *common, "--output_dir", str(killed), "--resume_from_checkpoint", str(checkpoint))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, actual = _state_dict(str(whole)), _state_dict(str(killed))
    assert expected.keys() == actual.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], atol=1e-5, rtol=1e-4, msg=key)
    # and training did move the weights, so the comparison means something
    start = _state_dict(workspace["reranker"])
    assert any(not torch.allclose(start[k], expected[k]) for k in start)


@pytest.mark.slow  # multi-process
def test_ddp_two_cpu_processes_with_lora(workspace, tmp_path):
    output_dir = tmp_path / "ddp-lora"
    result = _run_recipe(
        "reranker",
        "--model_name_or_path",
        workspace["reranker"],
        "--train_file",
        workspace["train"],
        "--eval_file",
        workspace["eval"],
        "--output_dir",
        str(output_dir),
        "--use_peft",
        "--lora_r",
        "4",
        "--max_steps",
        "2",
        "--save_strategy",
        "no",
        *QUICK,
        launcher=_launcher("--config_file", str(REPO / "accelerate_configs" / "multi_cpu.yaml")),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((output_dir / "distillation_report.json").read_text())
    assert report["world_size"] == 2
    assert report["metrics_after"]["eval_in_domain"]["num_queries"] == 6  # both ranks' predictions gathered
    assert not any("lora" in key for key in _state_dict(str(output_dir)))


@pytest.mark.slow  # multi-process
def test_ddp_two_cpu_processes_with_gradient_cache(workspace, tmp_path):
    output_dir = tmp_path / "ddp-cache"
    result = _run_recipe(
        "reranker",
        "--model_name_or_path",
        workspace["reranker"],
        "--train_file",
        workspace["train"],
        "--output_dir",
        str(output_dir),
        "--gradient_cache",
        "true",
        "--micro_batch_max_tokens",
        "64",
        "--max_steps",
        "2",
        "--save_strategy",
        "no",
        *QUICK,
        launcher=_launcher("--config_file", str(REPO / "accelerate_configs" / "multi_cpu.yaml")),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((output_dir / "distillation_report.json").read_text())
    assert report["world_size"] == 2
    start, trained = _state_dict(workspace["reranker"]), _state_dict(str(output_dir))
    assert any(not torch.allclose(start[k], trained[k]) for k in start)


@pytest.mark.slow  # multi-process
def test_deepspeed_zero3_two_processes(workspace, tmp_path):
    pytest.importorskip("deepspeed")
    output_dir = tmp_path / "zero3"
    result = _run_recipe(
        "reranker",
        "--model_name_or_path",
        workspace["reranker"],
        "--train_file",
        workspace["train"],
        "--eval_file",
        workspace["eval"],
        "--output_dir",
        str(output_dir),
        "--max_steps",
        "2",
        # several micro-batches per step, a different number on each rank: the dummy forwards that keep ZeRO-3's
        # parameter gathering in step run
        "--save_strategy",
        "no",
        "--micro_batch_max_tokens",
        "96",
        *QUICK,
        launcher=_launcher(
            "--config_file", str(REPO / "accelerate_configs" / "deepspeed_zero3.yaml"), "--mixed_precision", "no"
        ),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # Gathered from the shards into one full checkpoint that loads with every weight of the original shapes.
    from transformers import AutoModelForSequenceClassification

    saved, info = AutoModelForSequenceClassification.from_pretrained(str(output_dir), output_loading_info=True)
    start = AutoModelForSequenceClassification.from_pretrained(workspace["reranker"])
    assert not info["missing_keys"] and not info["mismatched_keys"]
    saved_weights, start_weights = saved.state_dict(), start.state_dict()
    assert {k: v.shape for k, v in saved_weights.items()} == {k: v.shape for k, v in start_weights.items()}
    assert any(not torch.equal(saved_weights[k], start_weights[k]) for k in start_weights)
    report = json.loads((output_dir / "distillation_report.json").read_text())
    assert report["world_size"] == 2 and report["metrics_after"]["eval_in_domain"]["num_queries"] == 6


@pytest.mark.parametrize(
    "config", sorted(str(p.relative_to(REPO)) for p in (REPO / "recipes").glob("*/*/config*.yaml")), ids=str
)
def test_every_seed_config_parses_into_the_recipe_arguments(config):
    from transformers import HfArgumentParser

    from hf_distill.cli import parse_config
    from hf_distill.data import eval_set_names
    from hf_distill.losses import DistillationLoss
    from hf_distill.recipe import ModelArguments, ScriptArguments
    from hf_distill.trainer import DistillationArguments

    parser = HfArgumentParser((ScriptArguments, ModelArguments, DistillationArguments))
    cpu = [] if torch.cuda.is_available() else ["--use_cpu", "true"]  # the configs say bf16: CPU bf16 here
    script_args, model_args, training_args = parse_config(parser, ["--config", str(REPO / config), *cpu])
    assert model_args.model_name_or_path and script_args.train_file and training_args.output_dir
    # The loss exists and takes the config's options (built as the trainer builds it, "auto" values resolved).
    options = {key: (1.0 if value == "auto" else value) for key, value in training_args.loss_options().items()}
    DistillationLoss(training_args.loss, hard_label_weight=training_args.hard_label_weight, **options)
    # Every eval set keeps a name of its own: none is dropped from the report and the card.
    assert len(eval_set_names(script_args.eval_file or [])) == len(script_args.eval_file or [])


def test_resume_from_a_mid_epoch_checkpoint_equals_the_uninterrupted_run(workspace, tmp_path):
    """Batches and candidate samples of a resumed run are those of the uninterrupted run, mid-epoch too."""
    import shutil

    # 16 groups, 4 per step: 4 steps per epoch; the checkpoint at step 6 is in the middle of the second epoch.
    # Groups of 6 cut to 4 (2 by teacher rank, 2 sampled); dropout on, so steps consume random numbers.
    common = [
        "--model_name_or_path",
        workspace["reranker"],
        "--train_file",
        workspace["train"],
        "--loss",
        "listnet",
        "--group_size",
        "4",
        "--learning_rate",
        "1e-3",
        "--max_steps",
        "10",
        "--save_strategy",
        "steps",
        "--save_steps",
        "6",
        "--evaluate_before_training",
        "false",
        "--dropout",
        "keep",
        *QUICK,
    ]
    whole = tmp_path / "whole"
    result = _run_recipe("reranker", *common, "--output_dir", str(whole))
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(whole / "checkpoint-6", resumed / "checkpoint-6")
    result = _run_recipe(
        "reranker", *common, "--output_dir", str(resumed), "--resume_from_checkpoint", str(resumed / "checkpoint-6")
    )
    assert result.returncode == 0, result.stderr[-3000:]
    expected, actual = _state_dict(str(whole)), _state_dict(str(resumed))
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], atol=1e-6, rtol=1e-5, msg=key)
    # The checkpoint and the end differ: four steps of training lie between them.
    at_checkpoint = _state_dict(str(whole / "checkpoint-6"))
    assert any(not torch.allclose(at_checkpoint[k], expected[k]) for k in expected)


@pytest.mark.slow  # multi-process
def test_ddp_full_weight_embedding_student_with_activation_checkpointing(workspace, tmp_path):
    """An encoder's pooler, which no bi-encoder loss reads, must not break DDP without find_unused_parameters."""
    output_dir = tmp_path / "ddp-embedding"
    result = _run_recipe(
        "embedding",
        "--model_name_or_path",
        workspace["encoder"],
        "--train_file",
        workspace["train"],
        "--output_dir",
        str(output_dir),
        "--pooling",
        "cls",
        "--activation_checkpointing",
        "true",
        "--max_steps",
        "3",
        "--save_strategy",
        "no",
        "--evaluate_before_training",
        "false",
        *QUICK,
        launcher=_launcher("--config_file", str(REPO / "accelerate_configs" / "multi_cpu.yaml")),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    start, trained = _state_dict(workspace["encoder"]), _state_dict(str(output_dir))
    assert any(not torch.allclose(start[k], trained[k]) for k in start if "encoder.layer" in k)
    pooler = [k for k in start if k.startswith("pooler")]
    assert pooler and all(torch.equal(start[k], trained[k]) for k in pooler)  # kept, untouched


def test_lora_on_a_bf16_base_is_merged_in_fp32_into_the_model_that_was_trained(workspace, tmp_path):
    from peft import PeftModel
    from transformers import AutoModel

    from hf_distill.recipe import run_distillation

    output_dir = tmp_path / "bf16-lora"
    run_distillation(
        "embedding",
        [
            "--model_name_or_path",
            workspace["encoder"],
            "--train_file",
            workspace["train"],
            "--output_dir",
            str(output_dir),
            "--pooling",
            "cls",
            "--use_peft",
            "--lora_r",
            "4",
            "--lora_target_modules",
            "query",
            "value",
            "--torch_dtype",
            "bfloat16",
            "--learning_rate",
            "1e-3",
            "--max_steps",
            "2",
            "--save_strategy",
            "no",
            "--evaluate_before_training",
            "false",
            *QUICK,
        ],
    )
    saved = _state_dict(str(output_dir))
    assert {tensor.dtype for tensor in saved.values()} == {torch.float32}
    # What was trained: the bf16 base plus the adapter, in exact arithmetic.
    base = AutoModel.from_pretrained(workspace["encoder"], dtype=torch.bfloat16).to(torch.float32)
    expected = PeftModel.from_pretrained(base, str(output_dir / "lora_adapter")).merge_and_unload().state_dict()
    key = "encoder.layer.0.attention.self.query.weight"
    update = (
        expected[key] - AutoModel.from_pretrained(workspace["encoder"], dtype=torch.bfloat16).state_dict()[key].float()
    )
    assert update.abs().max() > 0  # training moved the adapter
    torch.testing.assert_close(saved[key], expected[key], atol=0, rtol=0)


def test_a_failing_final_evaluation_leaves_the_trained_student_saved(workspace, tmp_path, monkeypatch):
    import hf_distill.recipe as recipe

    def out_of_memory(trainer, eval_datasets):
        raise RuntimeError("CUDA out of memory (simulated)")

    pushed = []
    monkeypatch.setattr(recipe, "_evaluate_all", out_of_memory)
    monkeypatch.setattr(recipe, "push_student", lambda *args, **kwargs: pushed.append(args))
    output_dir = tmp_path / "student"
    with pytest.raises(RuntimeError, match="simulated"):
        recipe.run_distillation(
            "reranker",
            [
                "--model_name_or_path",
                workspace["reranker"],
                "--train_file",
                workspace["train"],
                "--eval_file",
                workspace["eval"],
                "--output_dir",
                str(output_dir),
                "--max_steps",
                "2",
                "--save_strategy",
                "no",
                "--evaluate_before_training",
                "false",
                "--push_to_hub",
                "true",
                "--hub_model_id",
                "someone/student",
                *QUICK,
            ],
        )
    assert (output_dir / "model.safetensors").exists()
    assert not pushed  # a card without results does not go public
    report = json.loads((output_dir / "distillation_report.json").read_text())
    assert "simulated" in report["evaluation_error"] and report["metrics_after"] == {}


def test_eval_files_sharing_a_stem_are_all_reported(workspace, tmp_path):
    from hf_distill.recipe import run_distillation

    files = []
    for task, seed in (("stackoverflowdupquestions", 2), ("askubuntudupquestions", 3), ("scidocs", 4)):
        (tmp_path / "data" / task).mkdir(parents=True)
        files.append(str(_write_jsonl(tmp_path / "data" / task / "test_scored.jsonl", make_groups(4, 5, seed=seed))))
    output_dir = tmp_path / "student"
    report = run_distillation(
        "reranker",
        [
            "--model_name_or_path",
            workspace["reranker"],
            "--train_file",
            workspace["train"],
            "--eval_file",
            *files,
            "--output_dir",
            str(output_dir),
            "--max_steps",
            "1",
            "--save_strategy",
            "no",
            *QUICK,
        ],
    )
    names = ["stackoverflowdupquestions_test_scored", "askubuntudupquestions_test_scored", "scidocs_test_scored"]
    assert list(report["metrics_after"]) == names and list(report["metrics_before"]) == names
    card = (output_dir / "README.md").read_text()
    assert all(name in card for name in names)


def test_labels_only_eval_file_is_measured_without_a_teacher(workspace, tmp_path):
    from hf_distill.recipe import run_distillation

    rows = [
        {
            "query": row["query"],
            "positive": [p for p, label in zip(row["passages"], row["labels"]) if label == 1],
            "negative": [p for p, label in zip(row["passages"], row["labels"]) if label != 1],
        }
        for row in make_groups(6, 6, seed=2)
    ]
    mteb = _write_jsonl(tmp_path / "test.jsonl", [row for row in rows if row["positive"] and row["negative"]])
    report = run_distillation(
        "reranker",
        [
            "--model_name_or_path",
            workspace["reranker"],
            "--train_file",
            workspace["train"],
            "--eval_file",
            str(mteb),
            workspace["eval"],
            "--output_dir",
            str(tmp_path / "student"),
            "--max_steps",
            "1",
            "--save_strategy",
            "no",
            *QUICK,
        ],
    )
    labels_only, scored = report["metrics_after"]["test"], report["metrics_after"]["eval_in_domain"]
    assert {"map", "mrr@10", "ndcg@10"} <= labels_only.keys() and labels_only["num_queries"] > 0
    assert not {"spearman", "kendall", "loss", "teacher_map"} & labels_only.keys()
    assert {"spearman", "teacher_map"} <= scored.keys()


@pytest.mark.parametrize(
    "flags, message",
    [
        (("--model_name_or_path", "no-such-org/no-such-model"), "cannot load the student no-such-org/no-such-model"),
        (("--torch_dtype", "bfloat"), "--torch_dtype 'bfloat' is not a torch dtype"),
    ],
)
def test_a_student_that_cannot_be_loaded_is_one_clear_error(workspace, tmp_path, flags, message):
    args = [
        "--model_name_or_path",
        workspace["reranker"],
        "--train_file",
        workspace["train"],
        "--output_dir",
        str(tmp_path / "out"),
        *flags,
    ]
    result = _run_recipe("reranker", *args)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and message in result.stderr
