"""What every recipe shares: ``--config x.yaml`` plus CLI overrides, and one clear error instead of a traceback.

Usage in a recipe::

    parser = HfArgumentParser((ScriptArguments, ModelArguments, DistillationArguments))
    script_args, model_args, training_args = parse_config(parser)

``parse_config`` reads the YAML file named by ``--config`` (every key must be a field of one of the dataclasses;
an unknown key is an error naming the file and the key), uses its values as defaults, and lets any flag given on
the command line override them. :func:`exit_on_user_error` turns the errors a user can fix (bad data, bad
config, missing file) into one message on stderr and exit status 2. :func:`choose_num_threads` picks the torch
thread count of a CPU run (the cores this process owns, unless the user set a count).
"""

from __future__ import annotations

import argparse
import difflib
import functools
import gc
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import yaml
from transformers import HfArgumentParser

from .errors import ConfigError, HfDistillError

logger = logging.getLogger("hf_distill")

NUM_THREADS_ENV = "HF_DISTILL_NUM_THREADS"
# Launchers that export OMP_NUM_THREADS to their workers when their own environment has none: accelerate launch
# (always; 1 unless --num_cpu_threads_per_process or use_cpu with several physical cores per process) and torchrun
# (1, with several processes per node). Their value is a default, not the user's choice.
_LAUNCHER_NAMES = ("accelerate", "torchrun", "torch.distributed.run", "torch/distributed/run.py", "deepspeed")
_LAUNCHER_THREAD_FLAGS = ("--num_cpu_threads_per_process",)


def load_yaml_config(path: str, known_fields: set[str]) -> dict[str, Any]:
    """Read a recipe YAML file into a flat dict of field values, checking every key is known."""
    try:
        with open(path, encoding="utf-8") as f:
            values = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found. Fix: check the path given to --config.") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        raise ConfigError(
            f"{where}: invalid YAML ({getattr(error, 'problem', error)}). Fix: correct the syntax."
        ) from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: the config must be a mapping of 'field: value' lines, got {type(values).__name__}.")
    for key in values:
        if key not in known_fields:
            close = difflib.get_close_matches(str(key), known_fields, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else " See --help for the accepted fields."
            raise ConfigError(f"{path}: unknown field '{key}'.{hint}")
    return values


def parse_config(parser: HfArgumentParser, argv: list[str] | None = None) -> tuple:
    """Parse ``[--config file.yaml] [--flag value ...]`` into the parser's dataclasses (CLI wins over YAML)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    config_path = None
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise ConfigError("--config needs a path to a YAML file.")
        config_path = argv[i + 1]
        del argv[i : i + 2]
    if config_path is not None:
        known = {action.dest for action in parser._actions} - {"config", "help"}
        values = load_yaml_config(config_path, known)
        for action in parser._actions:
            if action.dest in values:
                # A required flag given by the YAML file is no longer required on the command line.
                action.required = False
        parser.set_defaults(**{k: (str(v) if isinstance(v, float) else v) for k, v in values.items()})
    if not any(action.dest == "config" for action in parser._actions):
        parser.add_argument(
            "--config", help="YAML file of 'field: value' lines; flags on the command line win over it."
        )
    outputs = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    *dataclasses_, remaining = outputs
    # --config was taken out of argv above; argparse still hands back its namespace (config=None): drop it.
    dataclasses_ = [output for output in dataclasses_ if not isinstance(output, argparse.Namespace)]
    if remaining:
        raise ConfigError(f"unknown command-line argument(s) {remaining}. Fix: see --help for the accepted flags.")
    return tuple(dataclasses_)


def _positive_int(value: Any, name: str) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        number = 0
    if number < 1:
        raise ConfigError(f"{name} must be a whole number of threads >= 1, got {value!r}. Fix: e.g. {name} 2.")
    return number


def choose_num_threads(
    env: Mapping[str, str],
    cores: int,
    num_threads: int | None = None,
    has_accelerator: bool = False,
    launcher: tuple[Sequence[str], Mapping[str, str]] | None = None,
) -> tuple[int | None, str]:
    """The torch thread count of one training process, and why: ``(None, reason)`` keeps torch's own setting.

    In order: ``num_threads`` (``--num_threads``), then ``HF_DISTILL_NUM_THREADS`` from ``env``; on a GPU machine
    torch's setting stays; ``OMP_NUM_THREADS`` stays when the user set it; otherwise ``cores`` (the CPUs this
    process may run on) divided by ``LOCAL_WORLD_SIZE`` (the processes on this node), at least 1.

    ``accelerate launch`` always exports ``OMP_NUM_THREADS`` (``1`` when given nothing) and torchrun exports ``1``,
    so a value seen under a launcher is the user's only if the launcher's own environment had ``OMP_NUM_THREADS``
    or its command line had ``--num_cpu_threads_per_process``. ``launcher`` is that ``(argv, environment)`` of
    the parent process when it is a launcher (see :func:`launcher_of_parent`), else ``None``.

    Raises:
        ConfigError: ``num_threads`` or ``HF_DISTILL_NUM_THREADS`` is not a whole number >= 1.
    """
    if num_threads is not None:
        return _positive_int(num_threads, "--num_threads"), "--num_threads"
    if env.get(NUM_THREADS_ENV, "").strip():
        return _positive_int(env[NUM_THREADS_ENV], NUM_THREADS_ENV), NUM_THREADS_ENV
    if has_accelerator:
        return None, f"a GPU run keeps torch's setting (--num_threads or {NUM_THREADS_ENV} sets one)"
    local_processes = _positive_int(env.get("LOCAL_WORLD_SIZE", "1") or "1", "LOCAL_WORLD_SIZE")
    per_process = max(cores // local_processes, 1)
    owned = f"{cores} cores this process may use / {local_processes} process(es) on this node"
    omp = env.get("OMP_NUM_THREADS", "").strip()
    if not omp:
        return per_process, owned
    if launcher is not None:
        argv, launcher_env = launcher
        user_flag = any(arg.split("=", 1)[0] in _LAUNCHER_THREAD_FLAGS for arg in argv)
        if not user_flag and not launcher_env.get("OMP_NUM_THREADS", "").strip():
            return per_process, f"{owned}; OMP_NUM_THREADS={omp} is the launcher's default, not yours"
    return None, f"OMP_NUM_THREADS={omp} (yours; {NUM_THREADS_ENV} overrides it)"


def launcher_of_parent() -> tuple[list[str], dict[str, str]] | None:
    """``(argv, environment)`` of the parent process when it is ``accelerate launch`` or torchrun, else ``None``
    (also where ``/proc`` cannot be read: then an ``OMP_NUM_THREADS`` seen is taken as the user's)."""
    parent = os.getppid()
    try:
        with open(f"/proc/{parent}/cmdline", "rb") as f:
            argv = [part.decode(errors="replace") for part in f.read().split(b"\0") if part]
        if not any(name in arg for arg in argv[:3] for name in _LAUNCHER_NAMES):
            return None
        with open(f"/proc/{parent}/environ", "rb") as f:
            pairs = [part.decode(errors="replace").partition("=") for part in f.read().split(b"\0") if part]
    except OSError:
        return None
    return argv, {key: value for key, _, value in pairs}


def skip_final_garbage_collection() -> None:
    """Call at the very end of a program: the interpreter's exit then skips its full garbage collections.

    At exit, Python clears every module and runs a full collection each time; with torch, transformers and
    datasets loaded that walks ~500k objects again and again: ~3.5 s of a recipe run on 2 cores (measured,
    BENCHMARKS.md "Fixed cost of a run"). ``gc.freeze()`` moves every live object out of the collector's sight;
    memory is returned by the process exit as always, and atexit handlers still run. Not for a library call
    inside a longer process: frozen objects are never collected.
    """
    gc.freeze()


def exit_on_user_error(main: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for a recipe's ``main``: errors a user can fix end the run with one message and exit code 2."""

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return main(*args, **kwargs)
        except HfDistillError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        except FileNotFoundError as error:
            print(f"error: {error}. Fix: check the path.", file=sys.stderr)
            sys.exit(2)

    return wrapper
