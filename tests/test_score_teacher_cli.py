"""recipes/score_teacher.py end to end: output rows, kill + resume, 2 processes, bad input, --config."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hf_distill.data import read_groups
from hf_distill.errors import ConfigError
from hf_distill.teachers import load_teacher, score_groups

from conftest import free_port
from tiny_models import build_tiny_qwen3_reranker

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "recipes" / "score_teacher.py"
# One thread per process: the tiny model's matmuls are too small to share, and a busy machine makes idle OpenMP
# threads spin (100x slower on 2 shared cores).
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
# ~2 prompts per batch, so a run has hundreds of batches to be killed in the middle of.
BATCH = ["--max_tokens_per_batch", "300", "--max_length", "150"]


def write_mteb_rows(path: Path, num_queries: int = 120, seed: int = 0) -> Path:
    """MTEB reranking rows whose passages repeat across queries (and one query repeats), as real data does."""
    rng = random.Random(seed)
    words = "linux file process memory kernel shell socket copy list remove archive print user group".split()
    pool = [" ".join(rng.choices(words, k=rng.randint(3, 30))) for _ in range(300)]
    rows = []
    for i in range(num_queries):
        query = " ".join(rng.sample(words, 3)) if i != 7 else rows[0]["query"]
        passages = rng.sample(pool, 8)
        rows.append({"query": query, "positive": passages[:1], "negative": passages[1:]})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def run_cli(*args: str, launcher: list[str] | None = None, timeout: int = 180) -> subprocess.CompletedProcess:
    command = (launcher or [sys.executable]) + [str(SCRIPT), *args]
    return subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("score_cli")
    model = build_tiny_qwen3_reranker(root)
    data = write_mteb_rows(root / "mteb.jsonl")
    reference = root / "reference.jsonl"
    result = run_cli(
        "--teacher_model_name_or_path", model, "--input_file", str(data), "--output_file", str(reference), *BATCH
    )
    assert result.returncode == 0, result.stderr
    return {"root": root, "model": model, "data": data, "reference": reference}


def test_output_has_one_listwise_row_per_input_row_in_order(setup, one_thread):
    rows = [json.loads(line) for line in setup["reference"].read_text().splitlines()]
    inputs = [json.loads(line) for line in setup["data"].read_text().splitlines()]
    assert [r["query"] for r in rows] == [r["query"] for r in inputs]
    assert [r["passages"] for r in rows] == [r["positive"] + r["negative"] for r in inputs]
    assert all(r["labels"] == [1] + [0] * 7 for r in rows)

    groups = read_groups(setup["data"], require_scores=False)
    teacher = load_teacher("qwen3_reranker", setup["model"], max_length=150, device="cpu")
    expected = score_groups(teacher, groups, max_tokens_per_batch=300, progress=False)
    assert [r["scores"] for r in rows] == [pytest.approx(s, abs=1e-6) for s in expected]


def test_sigkill_midway_then_rerun_gives_the_same_file(setup):
    output = setup["root"] / "killed.jsonl"
    records = Path(f"{output}.partial") / "scores.rank0.bin"
    args = [
        "--teacher_model_name_or_path",
        setup["model"],
        "--input_file",
        str(setup["data"]),
        "--output_file",
        str(output),
        *BATCH,
    ]
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), *args], cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while not (records.exists() and records.stat().st_size > 2000) and process.poll() is None:
        assert time.monotonic() < deadline, "the scoring run wrote no results"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not output.exists()

    # Changed options are refused, and nothing is mixed.
    changed = run_cli(*[a if a != "150" else "140" for a in args])
    assert changed.returncode == 2
    assert "teacher.max_length: 150 -> 140" in changed.stderr and "--overwrite_partial" in changed.stderr
    assert "Traceback" not in changed.stderr

    resumed = run_cli(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming:" in resumed.stderr
    assert output.read_bytes() == setup["reference"].read_bytes()
    assert not records.parent.exists()


@pytest.mark.slow  # multi-process
def test_two_processes_write_the_same_file_as_one(setup):
    output = setup["root"] / "two_processes.jsonl"
    # --multi_gpu starts torchrun workers, which run on CPU here (--cpu alone would start a single process).
    launcher = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
    ]
    result = run_cli(
        "--teacher_model_name_or_path",
        setup["model"],
        "--input_file",
        str(setup["data"]),
        "--output_file",
        str(output),
        *BATCH,
        launcher=launcher,
    )
    assert result.returncode == 0, result.stderr
    assert "rank 0 of 2" in result.stderr
    assert output.read_bytes() == setup["reference"].read_bytes()


def test_bad_input_exits_2_with_one_message_naming_file_line_and_field(setup):
    bad = setup["root"] / "bad.jsonl"
    bad.write_text(
        '{"query": "ls", "positive": ["lists files"], "negative": ["copies"]}\n'
        '{"query": "cp", "positive": "copies files", "negative": [3]}\n'
    )
    result = run_cli(
        "--teacher_model_name_or_path",
        setup["model"],
        "--input_file",
        str(bad),
        "--output_file",
        str(setup["root"] / "bad_out.jsonl"),
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{bad}:2:" in result.stderr and "'negative'" in result.stderr
    assert not (setup["root"] / "bad_out.jsonl").exists()


def _load_recipe():
    spec = importlib.util.spec_from_file_location("score_teacher", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["score_teacher"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_config_yaml_gives_defaults_and_the_command_line_overrides_them(tmp_path):
    recipe = _load_recipe()
    config = tmp_path / "score.yaml"
    config.write_text(
        "teacher_model_name_or_path: Qwen/Qwen3-Reranker-8B\ninput_file: in.jsonl\n"
        "output_file: out.jsonl\nmax_length: 1024\ndtype: bfloat16\ntrust_remote_code: false\n"
    )
    args = recipe.parse_args(["--config", str(config), "--max_length", "512", "--output_file", "other.jsonl"])
    assert (args.max_length, args.output_file, args.dtype, args.input_file) == (
        512,
        "other.jsonl",
        "bfloat16",
        "in.jsonl",
    )
    assert args.trust_remote_code is False and args.backend == "hf"

    config.write_text("input_file: in.jsonl\nmax_lenght: 10\n")
    with pytest.raises(ConfigError, match=r"score.yaml: unknown field 'max_lenght'. Did you mean 'max_length'\?"):
        recipe.parse_args(["--config", str(config)])
    config.write_text("input_file: in.jsonl\n")
    with pytest.raises(ConfigError, match="missing --teacher_model_name_or_path, --output_file"):
        recipe.parse_args(["--config", str(config)])
