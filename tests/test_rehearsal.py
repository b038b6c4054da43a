"""The users' path, rehearsed: every shell command of the READMEs runs as written, offline, on CPU.

Each README is run block by block in a fresh workspace that looks like the repository root (``recipes/`` and
``accelerate_configs/`` linked in), against an offline Hugging Face cache (``tests/offline_hub.py``) in which the
real ids (``BAAI/bge-reranker-v2-m3``, ``BAAI/bge-m3``, ``Qwen/Qwen3-Reranker-0.6B``, ``Qwen/Qwen3-Reranker-8B``,
``Qwen/Qwen3-Embedding-0.6B/8B``, ``mteb/*-reranking``) resolve to tiny checkpoints of the same architectures and
tokenizer classes. The commands are the README's text; ``tests/rehearsal_launcher.py`` only cuts sizes (steps,
max_length, processes). So the seed YAMLs run verbatim: bf16 (CPU bf16), LoRA merged on save, DDP and DeepSpeed
ZeRO-3 on two CPU processes, three eval sets, scoring from MTEB Hub datasets, evaluation and the model card.

What is checked after each README, as a user would: every eval set of each config is in the report and the
card; the saved student's pooling is the checkpoint's; the saved student, reloaded by sentence-transformers (or the
project's scorer for decoder students), reproduces the reported "after" metrics; the teacher metrics the trainer
reports equal those computed in float64 from the scored file (teacher scores reach the loss and the metrics
unrounded under bf16 and DeepSpeed).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from offline_hub import build_offline_hub, mteb_rows, offline_subprocess_env, write_scored_mteb_files
from rehearsal_launcher import LOG, REAL_PYTHON

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

pytestmark = pytest.mark.slow

# Blocks not run, each with the reason (matched against the block's first line).
NOT_RUN = {
    "bash recipes/quickstart/run.sh": "the quickstart installs a venv and trains for 7 minutes; CI runs its parts",
    "python -m pytest -q": "this very test suite",
    "pip install": "installation, done by .ci/run",
    "python benchmarks/": "benchmarks print timings (minutes to hours); not tests",
    "accelerate launch --config_file accelerate_configs/deepspeed_zero3.yaml --num_processes 2 --mixed_precision no": "a template with '...' placeholders; the same launch runs in tests/test_recipes.py",
}
READMES = [
    "recipes/bge-reranker-v2-m3/stackoverflowdupquestions/README.md",
    "recipes/bge-m3/scidocs/README.md",
    "recipes/qwen3-reranker-0.6b/stackoverflowdupquestions/README.md",
    "recipes/qwen3-embedding-0.6b/scidocs/README.md",
    "README.md",
]
# bf16 rounds the student's scores in the Trainer's evaluation (autocast) and not in the fp32 reload: metrics of
# tiny random students, whose scores differ by little, may move by this much. fp32 runs must match to 1e-6.
BF16_METRIC_TOLERANCE = 0.15


def bash_blocks(readme: Path) -> list[str]:
    """The ``bash`` code blocks of a Markdown file, in order."""
    return re.findall(r"```bash\n(.*?)```", readme.read_text(encoding="utf-8"), flags=re.S)


def _skip_reason(block: str) -> str | None:
    first = next(line for line in block.splitlines() if line.strip() and not line.startswith("#"))
    return next((reason for start, reason in NOT_RUN.items() if first.startswith(start)), None)


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> Path:
    hf_home = tmp_path_factory.mktemp("hf_home")
    build_offline_hub(hf_home)
    return hf_home


def _workspace(root: Path, readme: str) -> Path:
    """A folder that looks like the repository root, plus the files a user brings that a README names."""
    for name in ("recipes", "accelerate_configs"):
        (root / name).symlink_to(REPO / name)
    if readme == "README.md":
        # The main README's commands name a user's own files: a scored training set and two scored eval sets.
        write_scored_mteb_files(root)
        data = root / "data"
        (root / "scores.jsonl").write_bytes((data / "stackoverflowdupquestions" / "train_scored.jsonl").read_bytes())
        for name, task in (("so", "stackoverflowdupquestions"), ("askubuntu", "askubuntudupquestions")):
            (data / name).mkdir(exist_ok=True)
            (data / name / "test_scored.jsonl").write_bytes((data / task / "test_scored.jsonl").read_bytes())
    if "qwen3-reranker" in readme:  # step 4 scores the user's own rows with the distilled student
        rows = mteb_rows("stackoverflowdupquestions", "test", num_queries=4)
        (root / "my_rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    bin_dir = root / ".bin"
    bin_dir.mkdir()
    for tool in ("python", "accelerate"):
        stand_in = bin_dir / tool
        stand_in.write_text(
            f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(TESTS)!r})\n"
            f"from rehearsal_launcher import main\nmain({tool!r})\n",
            encoding="utf-8",
        )
        stand_in.chmod(0o755)
    return root


def _env(hub: Path, workspace: Path) -> dict[str, str]:
    env = offline_subprocess_env(hub)
    env.update(
        {
            "PATH": f"{workspace / '.bin'}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONPATH": str(REPO),
            REAL_PYTHON: sys.executable,
            LOG: str(workspace / "commands.log"),
            "OMP_NUM_THREADS": "1",
        }
    )
    return env


def _trained(block: str, workspace: Path) -> list[tuple[Path, str]]:
    """``(output folder, accelerate distributed type)`` of each training command of a block; the folder is the
    command's --output_dir, else its config's output_dir."""
    import yaml

    found = []
    for command in re.split(r"\n(?=\S)", block):
        if not re.search(r"recipes/(reranker|embedding)\.py", command):
            continue
        if "deepspeed_zero" in command:
            distributed = "DEEPSPEED"
        elif "multi_gpu" in command:
            distributed = "MULTI_CPU"  # --multi_gpu on a machine without GPUs: CPU workers over gloo
        else:
            distributed = "NO"
        flag = re.search(r"--output_dir\s+(\S+)", command)
        config = re.search(r"--config\s+(\S+)", command)
        if flag:
            found.append((workspace / flag.group(1), distributed))
        elif config:
            found.append((workspace / yaml.safe_load((REPO / config.group(1)).read_text())["output_dir"], distributed))
    return found


@pytest.mark.parametrize("readme", READMES)
def test_readme_commands_run_as_written(hub, tmp_path, readme):
    workspace = _workspace(tmp_path, readme)
    env = _env(hub, workspace)
    trained: list[tuple[Path, str]] = []
    skipped = []
    for block in bash_blocks(REPO / readme):
        reason = _skip_reason(block)
        if reason:
            skipped.append(reason)
            continue
        start = time.monotonic()
        result = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", block],
            cwd=workspace,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        print(f"{readme}: {time.monotonic() - start:6.1f} s  {block.strip().splitlines()[0][:90]}")
        assert result.returncode == 0, f"{readme}: this block failed:\n{block}\n--- stderr ---\n{result.stderr[-4000:]}"
        assert "Traceback" not in result.stderr, result.stderr[-4000:]
        trained += _trained(block, workspace)
    assert trained, f"{readme} trained nothing"
    for output_dir, distributed in trained:
        _check_student(output_dir, distributed, workspace, env, hub)


def _check_student(output_dir: Path, distributed: str, workspace: Path, env: dict[str, str], hub: Path) -> None:
    report = json.loads((output_dir / "distillation_report.json").read_text())
    # It ran as the README launched it: ZeRO-3 / DDP on two processes, or one.
    assert (report["distributed_type"], report["world_size"]) == (distributed, 1 if distributed == "NO" else 2)
    card = (output_dir / "README.md").read_text()
    # Every eval set of the config is measured, before and after, and shown in the card.
    names = list(report["eval_files"])
    assert len(names) == len(set(report["eval_files"].values()))
    assert list(report["metrics_after"]) == names and list(report["metrics_before"]) == names
    assert all(f"## {name}" in card or name in card for name in names)
    assert str(Path.home()) not in card and str(workspace) not in card  # no local paths go public
    # The saved student, reloaded the way it is served, gives the metrics the report prints.
    check = subprocess.run(
        [sys.executable, str(TESTS / "rehearsal_reload.py"), str(output_dir)],
        cwd=workspace,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert check.returncode == 0, check.stderr[-4000:]
    reloaded = json.loads(check.stdout.strip().splitlines()[-1])
    tolerance = 1e-6 if report["precision"] == "no" else BF16_METRIC_TOLERANCE
    for name in names:
        after, served = report["metrics_after"][name], reloaded["student"][name]
        for key in ("map", "mrr@10", "ndcg@10"):
            assert served[key] == pytest.approx(after[key], abs=tolerance), (output_dir.name, name, key)
        # Teacher metrics computed in the trainer (through DeepSpeed's input cast, under bf16) equal float64 ones.
        assert after["teacher_map"] == pytest.approx(reloaded["teacher"][name]["map"], abs=1e-9), name
    if reloaded.get("pooling"):  # a bi-encoder: saved with the pooling of the checkpoint it started from
        assert reloaded["pooling"] == reloaded["base_pooling"], output_dir
    if report.get("lora"):
        _lora_merge_is_in_the_saved_weights(output_dir, report, hub)


def _lora_merge_is_in_the_saved_weights(output_dir: Path, report: dict, hub: Path) -> None:
    """A LoRA student is saved in fp32 with its (small) update: rounded into bf16 weights, most of it is lost."""
    from safetensors.torch import load_file

    org, name = report["base_model"].split("/")
    (base_file,) = (hub / "hub" / f"models--{org}--{name}" / "snapshots").glob("*/model.safetensors")
    base, saved = load_file(str(base_file)), load_file(str(output_dir / "model.safetensors"))
    assert {tensor.dtype for tensor in saved.values()} == {torch.float32}
    targets = report["lora"]["lora_target_modules"]
    adapted = [key for key in saved if key in base and any(f".{t}.weight" in key for t in targets)]
    assert adapted and max((saved[k] - base[k].float()).abs().max().item() for k in adapted) > 0
