"""How many torch threads a recipe process takes: the cores it owns, unless the user set a count (issue 15).

``accelerate launch`` exports OMP_NUM_THREADS=1 to its workers when told nothing, which halved a CPU run on 2
cores; that value is the launcher's default, not the user's, and the recipes replace it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hf_distill.cli import choose_num_threads
from hf_distill.errors import ConfigError

from conftest import make_groups, save_tiny_checkpoint

REPO = Path(__file__).resolve().parents[1]
ACCELERATE_ARGV = ["/venv/bin/python", "/venv/bin/accelerate", "launch", "--num_processes", "1", "recipes/reranker.py"]


def test_plain_python_takes_every_core_it_may_run_on():
    assert choose_num_threads({}, cores=4)[0] == 4


def test_local_processes_share_the_cores_and_each_keeps_at_least_one():
    assert choose_num_threads({"LOCAL_WORLD_SIZE": "2"}, cores=4)[0] == 2
    assert choose_num_threads({"LOCAL_WORLD_SIZE": "3"}, cores=2)[0] == 1


def test_the_launchers_default_omp_value_is_replaced_by_the_cores_owned():
    env = {"OMP_NUM_THREADS": "1", "LOCAL_WORLD_SIZE": "1"}
    threads, reason = choose_num_threads(env, cores=2, launcher=(ACCELERATE_ARGV, {"PATH": "/usr/bin"}))
    assert threads == 2
    assert "launcher's default" in reason


@pytest.mark.parametrize(
    "launcher_argv, launcher_env",
    [
        (ACCELERATE_ARGV, {"OMP_NUM_THREADS": "1"}),  # OMP_NUM_THREADS=1 accelerate launch ...
        (ACCELERATE_ARGV[:3] + ["--num_cpu_threads_per_process", "1"] + ACCELERATE_ARGV[3:], {}),
        (ACCELERATE_ARGV[:3] + ["--num_cpu_threads_per_process=1"] + ACCELERATE_ARGV[3:], {}),
    ],
)
def test_a_count_the_user_gave_the_launcher_is_kept(launcher_argv, launcher_env):
    threads, reason = choose_num_threads({"OMP_NUM_THREADS": "1"}, cores=2, launcher=(launcher_argv, launcher_env))
    assert threads is None  # torch already runs with OMP_NUM_THREADS
    assert reason.startswith("OMP_NUM_THREADS=1 (yours")


def test_omp_num_threads_without_a_launcher_is_the_users():
    assert choose_num_threads({"OMP_NUM_THREADS": "1"}, cores=2, launcher=None)[0] is None


def test_our_own_setting_wins_over_everything_gpu_included():
    env = {"HF_DISTILL_NUM_THREADS": "3", "OMP_NUM_THREADS": "1"}
    assert choose_num_threads(env, cores=2, has_accelerator=True) == (3, "HF_DISTILL_NUM_THREADS")
    assert choose_num_threads(env, cores=2, num_threads=5) == (5, "--num_threads")


def test_a_gpu_run_keeps_torchs_setting():
    threads, reason = choose_num_threads({}, cores=16, has_accelerator=True)
    assert threads is None and "GPU" in reason


@pytest.mark.parametrize(
    "env, num_threads, name",
    [
        ({"HF_DISTILL_NUM_THREADS": "two"}, None, "HF_DISTILL_NUM_THREADS"),
        ({"HF_DISTILL_NUM_THREADS": "0"}, None, "HF_DISTILL_NUM_THREADS"),
        ({}, 0, "--num_threads"),
        ({"LOCAL_WORLD_SIZE": "-1"}, None, "LOCAL_WORLD_SIZE"),
    ],
)
def test_a_bad_thread_count_is_one_clear_error(env, num_threads, name):
    with pytest.raises(ConfigError, match=f"{name} must be a whole number of threads >= 1"):
        choose_num_threads(env, cores=2, num_threads=num_threads)


@pytest.mark.slow  # a whole accelerate launch: 27 s measured on 2 busy cores
def test_recipe_under_accelerate_launch_uses_the_cores_it_owns(tokenizer, tmp_path):
    """The README's launch, `accelerate launch --num_processes 1 recipes/reranker.py`, on a CPU machine."""
    checkpoint = save_tiny_checkpoint(tokenizer, tmp_path / "tiny-reranker", "reranker")
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(row) + "\n" for row in make_groups(4, 4)), encoding="utf-8")
    env = {key: value for key, value in os.environ.items() if key not in ("OMP_NUM_THREADS", "HF_DISTILL_NUM_THREADS")}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="")
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1"]
    launch += ["--mixed_precision", "no", "--dynamo_backend", "no", str(REPO / "recipes" / "reranker.py")]
    recipe_args = [
        "--model_name_or_path",
        checkpoint,
        "--train_file",
        str(train),
        "--output_dir",
        str(tmp_path / "out"),
    ]
    recipe_args += ["--max_steps", "1", "--max_length", "32", "--report_to", "none", "--save_strategy", "no"]
    result = subprocess.run(launch + recipe_args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if "hf_distill: torch threads:" in line]
    assert len(lines) == 1, result.stderr[-3000:]
    cores = len(os.sched_getaffinity(0))
    assert f"torch threads: {cores} (" in lines[0]
    if cores > 1:  # the launcher exported OMP_NUM_THREADS=1 and the recipe saw through it
        assert "OMP_NUM_THREADS=1 is the launcher's default" in lines[0]


def test_a_bad_num_threads_flag_stops_the_recipe_before_loading_anything(tmp_path, capsys):
    from hf_distill.recipe import run_distillation

    argv = ["--model_name_or_path", "unused", "--train_file", str(tmp_path / "none.jsonl")]
    with pytest.raises(SystemExit) as exit_info:
        run_distillation("reranker", [*argv, "--output_dir", str(tmp_path / "out"), "--num_threads", "0"])
    assert exit_info.value.code == 2
    assert "--num_threads must be a whole number of threads >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
