"""Stand-ins for ``python`` and ``accelerate`` on the rehearsal tier's PATH: the README commands run as written, with
only their sizes cut down.

``tests/test_rehearsal.py`` runs every ``bash`` block of the READMEs verbatim in a workspace whose PATH starts with
two small executables that call :func:`main`. They hand the command to the real interpreter / ``accelerate launch``
with these changes, and no others:

* a recipe script (``recipes/*.py``) gets the size flags of :data:`SIZE_FLAGS` appended (flags given later win,
  so the README's own ``--max_length 512`` becomes 128): a couple of steps on tiny models instead of an epoch;
* ``accelerate launch`` runs teacher scoring as one plain process (``--multi_gpu --num_processes 8`` -> one: the
  data-parallel scorer is tested on two processes in ``tests/test_score_teacher_cli.py``) and training in at most
  two processes (the CPU count of CI), on a free port; scoring reads at most 24 queries of its input.

Everything else (the config files, bf16, DeepSpeed ZeRO-3, LoRA, the Hub ids, the data paths) is the README's.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

# 128 tokens: the Qwen3-Reranker prompt frame alone is 75.
SIZE_FLAGS = {
    "score_teacher.py": ["--max_length", "128", "--max_queries", "24"],
    "reranker.py": ["--max_steps", "2", "--max_length", "128"],
    "embedding.py": ["--max_steps", "2", "--max_length", "128"],
    "evaluate.py": ["--max_length", "128"],
}
MAX_TRAINING_PROCESSES = 2
# Where the real executables are: the test writes them into the environment of each command.
REAL_PYTHON = "HF_DISTILL_REHEARSAL_PYTHON"
LOG = "HF_DISTILL_REHEARSAL_LOG"


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _script_position(argv: list[str]) -> int | None:
    for i, arg in enumerate(argv):
        if arg.endswith(".py") and Path(arg).name in SIZE_FLAGS:
            return i
    return None


def _with_size_flags(argv: list[str], position: int) -> list[str]:
    return argv + SIZE_FLAGS[Path(argv[position]).name]


def rewrite(tool: str, argv: list[str]) -> list[str]:
    """The command the stand-in runs for ``tool argv...`` (``tool``: ``python`` or ``accelerate``)."""
    python = os.environ[REAL_PYTHON]
    position = _script_position(argv)
    if tool == "python":
        return [python, *(argv if position is None else _with_size_flags(argv, position))]
    if not argv or argv[0] != "launch" or position is None:
        return [python, "-m", "accelerate.commands.accelerate_cli", *argv]
    launcher, script = argv[1:position], argv[position:]
    scoring = Path(script[0]).name == "score_teacher.py"
    if scoring:  # one process: the launcher would only start the same script once
        return [python, *_with_size_flags(script, 0)]
    processes, rewritten, i = None, [], 0
    while i < len(launcher):
        if launcher[i] == "--num_processes":
            processes = int(launcher[i + 1])
            i += 2
            continue
        if launcher[i] == "--config_file":
            import yaml

            config = yaml.safe_load(Path(launcher[i + 1]).read_text(encoding="utf-8"))
            processes = processes if processes is not None else int(config.get("num_processes", 1))
        rewritten.append(launcher[i])
        i += 1
    processes = min(processes or 1, MAX_TRAINING_PROCESSES)
    rewritten += ["--num_processes", str(processes), "--main_process_port", _free_port(), "--dynamo_backend", "no"]
    if "--config_file" not in launcher:
        rewritten += ["--num_machines", "1"]
    return [python, "-m", "accelerate.commands.launch", *rewritten, *_with_size_flags(script, 0)]


def main(tool: str) -> None:
    command = rewrite(tool, sys.argv[1:])
    if os.environ.get(LOG):
        with open(os.environ[LOG], "a", encoding="utf-8") as f:
            f.write(" ".join(command) + "\n")
    os.execv(command[0], command)
