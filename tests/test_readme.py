"""The README's Python example runs as written (with a tiny local student and data in place of the Hub ones), and
CI runs exactly the README's test command."""

import json
import re
from pathlib import Path

import torch

from conftest import make_groups, tiny_bert_config

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def _code_block(after_heading: str, language: str) -> str:
    section = README.split(after_heading, 1)[1]
    return re.search(rf"```{language}\n(.*?)```", section, re.S).group(1)


def test_readme_python_example_trains_and_saves_a_servable_reranker(tmp_path, tokenizer, monkeypatch):
    from sentence_transformers import CrossEncoder
    from transformers import AutoModelForSequenceClassification

    student = tmp_path / "student"
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(tiny_bert_config(tokenizer)).save_pretrained(student)
    tokenizer.save_pretrained(student)
    (tmp_path / "scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in make_groups(8, 5)), encoding="utf-8")

    code = _code_block("## In Python", "python")
    assert len(code.strip().splitlines()) <= 15
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace("BAAI/bge-reranker-v2-m3", str(student)), "README.md", "exec"), {})

    saved = tmp_path / "out" / "reranker"
    assert (saved / "model.safetensors").exists()
    assert CrossEncoder(str(saved)).predict([("linux kernel", "kernel memory")]).shape == (1,)


def test_ci_runs_the_readme_test_command():
    command = _code_block("## Tests", "bash").strip()
    ci_lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert command in ci_lines


def test_the_public_api_is_importable_from_the_package():
    import hf_distill

    for name in hf_distill.__all__:
        assert getattr(hf_distill, name) is not None, name
    from hf_distill import DistillationArguments, RerankerDistillationTrainer, load_ranking_dataset, register_loss

    assert RerankerDistillationTrainer.__module__ == "hf_distill.trainer"
    assert callable(load_ranking_dataset) and callable(register_loss) and DistillationArguments
