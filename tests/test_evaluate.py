"""recipes/evaluate.py: before/after metrics of tiny students on small eval files, checked against scores computed
independently (a plain forward of each checkpoint), plus the reports and a bad eval file."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from hf_distill.data import read_groups
from hf_distill.evaluation import ranking_quality
from hf_distill.metrics import compute_ranking_metrics, ranking_metrics
from hf_distill.st_format import write_sentence_transformers_config

from conftest import make_groups, save_tiny_checkpoint

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "recipes" / "evaluate.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("evaluate_recipe", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


evaluate_recipe = _load_script()


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tokenizer):
    """A tiny cross-encoder, a tiny bi-encoder saved as the embedding recipe saves it, two teacher-scored files."""
    root = tmp_path_factory.mktemp("evaluate")
    reranker = Path(save_tiny_checkpoint(tokenizer, root / "tiny-reranker", "reranker", seed=1))
    bi_encoder = Path(save_tiny_checkpoint(tokenizer, root / "tiny-bi-encoder", "encoder", seed=2))
    write_sentence_transformers_config(
        str(bi_encoder), pooling="mean", normalize=True, similarity="cosine", max_length=64
    )

    in_domain = write_jsonl(root / "in_domain.jsonl", make_groups(num_queries=6, num_candidates=5, seed=0))
    out_of_domain = write_jsonl(root / "out_of_domain.jsonl", make_groups(num_queries=5, num_candidates=4, seed=1))
    return {
        "root": root,
        "reranker": str(reranker),
        "bi_encoder": str(bi_encoder),
        "eval_files": [in_domain, out_of_domain],
    }


def padded(rows: list[dict], flat_scores) -> tuple[np.ndarray, ...]:
    """The matrices compute_ranking_metrics takes, built by hand from the rows and flat per-pair scores."""
    width = max(len(row["passages"]) for row in rows)
    student, teacher = np.zeros((len(rows), width)), np.zeros((len(rows), width))
    labels, mask = np.zeros((len(rows), width), dtype=int), np.zeros((len(rows), width), dtype=bool)
    start = 0
    for i, row in enumerate(rows):
        n = len(row["passages"])
        student[i, :n] = flat_scores[start : start + n]
        teacher[i, :n], labels[i, :n], mask[i, :n] = row["scores"], row["labels"], True
        start += n
    return student, teacher, labels, mask


def read_rows(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def expected_metrics(rows: list[dict], flat_scores) -> dict:
    student, teacher, labels, mask = padded(rows, flat_scores)
    return compute_ranking_metrics((student, (teacher, labels, mask)))


def assert_same_metrics(measured: dict, expected: dict) -> None:
    for key in ("map", "mrr@10", "ndcg@10", "spearman", "kendall", "num_queries"):
        assert measured[key] == pytest.approx(expected[key], abs=1e-6), key


def cross_encoder_logits(model, tokenizer, rows: list[dict]) -> np.ndarray:
    """One padded batch of every (query, passage) pair: the raw logit, as CrossEncoder(...).predict gives it."""
    queries = [row["query"] for row in rows for _ in row["passages"]]
    passages = [passage for row in rows for passage in row["passages"]]
    features = tokenizer(queries, passages, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        return model.eval()(**features).logits.squeeze(-1).numpy()


def mean_pooled_cosines(model, tokenizer, rows: list[dict]) -> list[float]:
    def embed(texts):
        features = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
        with torch.no_grad():
            hidden = model.eval()(**features).last_hidden_state
        mask = features["attention_mask"].unsqueeze(-1).float()
        return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)

    return [float(c) for row in rows for c in embed(row["passages"]) @ embed([row["query"]])[0]]


def test_reranker_before_after_matches_independent_scores(setup, capsys):
    """Student = the tiny cross-encoder; base = the first layer of a bi-encoder checkpoint with a fresh head."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    output_dir = setup["root"] / "reranker-eval"
    results = evaluate_recipe.main(
        [
            "--model_name_or_path", setup["reranker"],
            "--base_model_name_or_path", setup["bi_encoder"],
            "--student_kind", "reranker",
            "--num_hidden_layers", "1",
            "--eval_file", *setup["eval_files"],
            "--output_dir", str(output_dir),
            "--device", "cpu",
        ]
    )  # fmt: skip
    assert {p.name for p in output_dir.iterdir()} == {"metrics.json", "metrics.md", "metrics.png"}
    saved = json.loads((output_dir / "metrics.json").read_text())
    assert saved["models"]["student_kind"] == "reranker"
    assert set(saved["eval_sets"]) == {"in_domain", "out_of_domain"}

    # The base, built independently: first layer, fresh one-logit head drawn after torch.manual_seed(0).
    torch.manual_seed(0)
    base = AutoModelForSequenceClassification.from_pretrained(setup["bi_encoder"], num_labels=1, num_hidden_layers=1)
    tokenizer = AutoTokenizer.from_pretrained(setup["bi_encoder"])
    student = AutoModelForSequenceClassification.from_pretrained(setup["reranker"])
    for name, path in zip(("in_domain", "out_of_domain"), setup["eval_files"]):
        rows, result = read_rows(path), saved["eval_sets"][name]
        assert result == json.loads(json.dumps(results[name]))  # what main returns is what it wrote
        assert result["file"] == path and result["num_groups"] == len(rows)

        student_scores = cross_encoder_logits(student, tokenizer, rows)
        assert_same_metrics(result["student"], expected_metrics(rows, student_scores))
        assert_same_metrics(result["base"], expected_metrics(rows, cross_encoder_logits(base, tokenizer, rows)))

        _, teacher, labels, mask = padded(rows, student_scores)
        teacher_ranking = ranking_metrics(teacher, labels, mask)
        for key in ("map", "mrr@10", "ndcg@10"):
            assert result["teacher"][key] == pytest.approx(teacher_ranking[key])
            change = result["change"][key]
            assert change["absolute"] == pytest.approx(result["student"][key] - result["base"][key])
            assert change["relative"] == pytest.approx(change["absolute"] / abs(result["base"][key]))

    # The Markdown table is printed and written, with the relative change as a percentage.
    printed = capsys.readouterr().out
    markdown = (output_dir / "metrics.md").read_text()
    assert markdown.strip() in printed
    change = saved["eval_sets"]["in_domain"]["change"]["map"]
    assert f"{change['absolute']:+.4f} ({change['relative']:+.1%})" in markdown
    assert "| teacher |" in markdown and "| base (before) |" in markdown and "| student (after) |" in markdown

    png = (output_dir / "metrics.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    assert width > 400 and height > 200


def test_embedding_student_from_config_file_auto_kind(setup):
    """--config YAML plus CLI flags; auto kind reads the sentence-transformers files; no base: no change row."""
    from transformers import AutoModel, AutoTokenizer

    config = setup["root"] / "evaluate.yaml"
    config.write_text(
        yaml.safe_dump({"model_name_or_path": setup["bi_encoder"], "eval_file": setup["eval_files"][:1]}),
        encoding="utf-8",
    )
    output_dir = setup["root"] / "embedding-eval"
    results = evaluate_recipe.main(["--config", str(config), "--output_dir", str(output_dir), "--device", "cpu"])

    result = results["in_domain"]
    assert result["base"] is None and result["change"] is None
    rows = read_rows(setup["eval_files"][0])
    bi_encoder = setup["bi_encoder"]
    model, tokenizer = AutoModel.from_pretrained(bi_encoder), AutoTokenizer.from_pretrained(bi_encoder)
    cosines = mean_pooled_cosines(model, tokenizer, rows)
    assert_same_metrics(result["student"], expected_metrics(rows, cosines))
    saved = json.loads((output_dir / "metrics.json").read_text())
    assert saved["models"]["student_kind"] == "embedding"
    assert "| change |" not in (output_dir / "metrics.md").read_text()


def test_unscored_eval_file_has_no_teacher_row(setup):
    """MTEB rows carry labels but no teacher scores: MAP etc. but no teacher row and no agreement."""
    rows = [
        {"query": "copy files", "positive": ["cp copies files"], "negative": ["ls lists files", "rm removes files"]},
        {"query": "list a directory", "positive": ["ls lists directory contents"], "negative": ["kill a process"]},
    ]
    path = write_jsonl(setup["root"] / "mteb.jsonl", rows)
    results = evaluate_recipe.main(
        ["--model_name_or_path", setup["reranker"], "--eval_file", path, "--output_dir", str(setup["root"] / "mteb")]
    )
    result = results["mteb"]
    assert result["teacher"] is None
    assert result["student"]["num_queries"] == 2 and "spearman" not in result["student"]
    assert "None" not in (setup["root"] / "mteb" / "metrics.md").read_text()


def test_malformed_eval_file_exits_2_with_file_and_line(setup, tmp_path):
    good = json.dumps({"query": "q", "passages": ["a", "b"], "scores": [1.0, 0.0]})
    bad = json.dumps({"query": "q", "passages": ["a", "b"], "scores": [1.0, "high"]})
    path = tmp_path / "broken.jsonl"
    path.write_text(f"{good}\n{bad}\n", encoding="utf-8")
    output_dir = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--model_name_or_path", setup["reranker"], "--eval_file", str(path),
         "--output_dir", str(output_dir)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert f"{path}:2: field 'scores'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not output_dir.exists()  # every file is validated before anything is loaded or written


def test_in_memory_model_is_refused_where_the_teacher_must_load_it_itself():
    """Qwen3-Reranker prepares its yes/no head while loading, so it cannot take a model already in memory."""
    from hf_distill.teachers import TeacherConfigError, load_teacher

    with pytest.raises(TeacherConfigError, match="cross_encoder and embedding"):
        load_teacher("qwen3_reranker", "any/checkpoint", model=torch.nn.Linear(2, 1))


def test_causal_llm_reranker_is_scored_with_the_qwen3_reranker_prompt(setup, tiny_qwen3):
    """A distilled decoder (Qwen3-Reranker style) student is evaluated by the scorer that scored the teacher."""
    from hf_distill.teachers import load_teacher, score_groups

    instruction = "Find the manual page of a command"
    results = evaluate_recipe.main(
        [
            "--model_name_or_path",
            tiny_qwen3,
            "--base_model_name_or_path",
            tiny_qwen3,
            "--instruction",
            instruction,
            "--eval_file",
            setup["eval_files"][0],
            "--output_dir",
            str(setup["root"] / "qwen3-eval"),
            "--device",
            "cpu",
        ]
    )
    result = next(iter(results.values()))
    groups = read_groups(setup["eval_files"][0])
    teacher = load_teacher("qwen3_reranker", tiny_qwen3, instruction=instruction, dtype="float32", device="cpu")
    expected = ranking_quality(groups, score_groups(teacher, groups, progress=False))
    assert result["student"]["map"] == pytest.approx(expected["map"], abs=1e-6)
    assert result["base"]["map"] == pytest.approx(expected["map"], abs=1e-6)  # same weights before and after
    # a different instruction is a different prompt: the scores must move
    other = load_teacher("qwen3_reranker", tiny_qwen3, dtype="float32", device="cpu")
    assert score_groups(other, groups, progress=False) != score_groups(teacher, groups, progress=False)


MTEB_ROWS = [
    {"query": "copy files", "positive": ["cp copies files"], "negative": ["ls lists files", "rm removes files"]},
    {"query": "list a directory", "positive": ["ls lists directory contents"], "negative": ["kill a process"]},
]


def test_labels_only_eval_file_evaluates_student_and_base_without_a_teacher(setup, caplog, capsys):
    """MTEB rows {query, positive[], negative[]} next to a scored file: student and base are measured on both;
    the unscored set has no teacher row and no agreement columns, and the log and the Markdown say why."""
    mteb = write_jsonl(setup["root"] / "mteb_labels.jsonl", MTEB_ROWS)
    output_dir = setup["root"] / "mteb-with-base"
    caplog.set_level(logging.INFO, logger="hf_distill")
    results = evaluate_recipe.main([
        "--model_name_or_path", setup["reranker"], "--base_model_name_or_path", setup["bi_encoder"],
        "--student_kind", "reranker", "--num_hidden_layers", "1",
        "--eval_file", mteb, setup["eval_files"][0], "--output_dir", str(output_dir), "--device", "cpu",
    ])  # fmt: skip
    result = results["mteb_labels"]
    assert result["teacher"] is None
    for row in ("student", "base"):
        assert result[row]["num_queries"] == 2 and 0.0 <= result[row]["map"] <= 1.0
        assert not {"spearman", "kendall"} & set(result[row])
    assert set(result["change"]) == {"map", "mrr@10", "ndcg@10"}
    assert "spearman" in results["in_domain"]["student"] and results["in_domain"]["teacher"]

    note = f"mteb_labels: no teacher scores in {mteb}: teacher row and agreement columns left out"
    assert [r.getMessage() for r in caplog.records].count(note) == 1
    assert not any("in_domain: no teacher scores" in r.getMessage() for r in caplog.records)

    markdown = (output_dir / "metrics.md").read_text()
    unscored, scored = markdown.split("## mteb_labels", 1)[1].split("## in_domain", 1)
    assert "no teacher scores in this file: teacher row and agreement columns left out" in unscored
    assert "| teacher |" not in unscored and "Spearman" not in unscored and "Kendall" not in unscored
    assert "| base (before) |" in unscored and "| change |" in unscored
    assert "| teacher |" in scored and "Spearman vs teacher" in scored
    assert markdown.strip() in capsys.readouterr().out


def test_reports_without_matplotlib_skip_the_chart_only(setup, monkeypatch, caplog, capsys):
    """matplotlib is the optional [plot] extra: without it the JSON and Markdown are still written and printed."""
    for module in ("matplotlib", "matplotlib.figure", "matplotlib.backends", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, module, None)  # `import matplotlib...` now raises ModuleNotFoundError
    output_dir = setup["root"] / "no-matplotlib"
    caplog.set_level(logging.INFO, logger="hf_distill")
    results = evaluate_recipe.main([
        "--model_name_or_path", setup["reranker"], "--eval_file", setup["eval_files"][0],
        "--output_dir", str(output_dir), "--device", "cpu",
    ])  # fmt: skip
    assert set(results) == {"in_domain"}
    assert {p.name for p in output_dir.iterdir()} == {"metrics.json", "metrics.md"}
    assert json.loads((output_dir / "metrics.json").read_text())["eval_sets"]["in_domain"]["student"]["map"] >= 0
    assert (output_dir / "metrics.md").read_text().strip() in capsys.readouterr().out
    chart_lines = [r.getMessage() for r in caplog.records if "chart" in r.getMessage()]
    assert chart_lines == [
        'chart skipped: matplotlib is not installed (pip install matplotlib, or pip install "hf_distill[plot]")'
    ]


def test_eval_sets_sharing_a_file_stem_are_named_by_their_folder(setup, tmp_path):
    """Benchmarks ship the same file name per task (scidocs/test.jsonl, so/test.jsonl); name=path overrides."""
    scidocs, so = tmp_path / "scidocs", tmp_path / "so"
    scidocs.mkdir(), so.mkdir()
    rows = make_groups(num_queries=3, num_candidates=3, seed=3)
    first, second = write_jsonl(scidocs / "test.jsonl", rows), write_jsonl(so / "test.jsonl", MTEB_ROWS)
    results = evaluate_recipe.main([
        "--model_name_or_path", setup["reranker"], "--eval_file", first, second, f"in_domain={setup['eval_files'][0]}",
        "--output_dir", str(tmp_path / "out"), "--device", "cpu",
    ])  # fmt: skip
    assert list(results) == ["scidocs_test", "so_test", "in_domain"]
    assert [result["file"] for result in results.values()] == [first, second, setup["eval_files"][0]]
    assert results["so_test"]["teacher"] is None and results["scidocs_test"]["teacher"] is not None
