"""Fixed cost of a recipe run: where the seconds outside the training steps go, with ``python`` and ``accelerate``.

Each run is a whole process, timed from outside (wall, and CPU time of the process and its children from
``wait4``): ``python recipes/<task>.py ...`` or ``accelerate launch --num_processes 1 recipes/<task>.py ...``.
Inside, the process runs this file's ``_child`` mode, which runs the recipe script itself (``runpy``) after
putting timers around the stages ``run_distillation`` calls, so the wall time splits into

* **launcher**: ``accelerate launch`` itself (its imports, before the training process starts; 0 with python);
* **imports**: interpreter start to ``hf_distill.recipe`` imported (what the recipe script imports);
* **setup**: parsing the flags, choosing the thread count;
* **data**: reading (and validating) the training and eval files;
* **model load**: tokenizer and student;
* **trainer init**: data preparation (filter, group lengths), collators, the Trainer and its Accelerator;
* **train setup**: ``train()`` up to its first callback (dataloader, optimizer, ``accelerator.prepare``);
* **eval before**: the Trainer's evaluation at step 0 (``eval_on_start``; only with ``--eval``);
* **training steps**: first step start to last step end (collation, forward, backward, optimizer, logging);
  the first step's excess over the median step is shown on its own (one-time work inside the first step);
* **train end**: after the last step to ``train()`` returned; **save**; **eval after**; **report + card**;
* **exit**: the recipe script's last line done to the process gone (interpreter shutdown).

Fixed cost = wall - training steps. Repeats are interleaved (launch ways and code versions take turns), so a busy
machine slows each alike; medians are reported. ``--code NAME=DIR`` runs another copy of the package (``DIR``
holds an ``hf_distill/`` folder, e.g. a copy taken before a change) side by side with the working tree.

Usage::

    python benchmarks/fixed_cost.py --repeats 3                     # 100 train queries, no eval sets
    python benchmarks/fixed_cost.py --repeats 3 --eval              # + both eval sets (before/after evaluation)
    python benchmarks/fixed_cost.py --repeats 3 --code before=/tmp/hf_distill_before
    python benchmarks/fixed_cost.py --repeats 5 --imports           # the import floor only
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import statistics
import subprocess
import sys
import time
from pathlib import Path

STAGES = (
    "launcher",
    "imports",
    "setup",
    "data",
    "model load",
    "trainer init",
    "train setup",
    "eval before",
    "first step excess",
    "train end",
    "save",
    "eval after",
    "report + card",
    "exit",
)
LAUNCHES = ("python", "accelerate")
# The import floor (``--imports``): what a Trainer-based recipe cannot avoid importing, step by step, against what
# the recipe script imports. transformers.trainer imports datasets and peft whenever they are installed.
IMPORT_STEPS = {
    "python (empty)": "pass",
    "torch": "import torch",
    "transformers Trainer": "from transformers import Trainer",
    "hf_distill.recipe": "import hf_distill.recipe",
}


def import_floor(repeats: int) -> str:
    """Wall and CPU seconds of a fresh ``python -c <import>`` per step of IMPORT_STEPS, interleaved, medians."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in IMPORT_STEPS}
    for repeat in range(repeats):
        names = list(IMPORT_STEPS)
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            start = time.perf_counter()
            process = subprocess.Popen([sys.executable, "-c", IMPORT_STEPS[name]])
            _, status, usage = os.wait4(process.pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                raise RuntimeError(f"python -c {IMPORT_STEPS[name]!r} failed")
            times[name].append((time.perf_counter() - start, usage.ru_utime + usage.ru_stime))
    lines = ["| python -c ... | wall s (median) | CPU s (median) |", "|---|---:|---:|"]
    for name, runs in times.items():
        wall, cpu = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        lines.append(f"| `{IMPORT_STEPS[name]}` | {wall:.2f} | {cpu:.2f} |")
    return "\n".join(lines)


def _boot_clock() -> float:
    """Seconds on the clock that ``/proc/<pid>/stat``'s start time counts on (the same in every process)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def _process_start() -> float:
    """When this process started, on :func:`_boot_clock` (Linux; 10 ms resolution)."""
    with open("/proc/self/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of stat(5); two fields precede the ")"


# ---------------------------------------------------------------------------------------------------------------
# The child: run_distillation with timers (runs under `python` or `accelerate launch`)
# ---------------------------------------------------------------------------------------------------------------


def child(out_path: str, script: str, argv: list[str]) -> None:
    marks: dict[str, float] = {"start": _process_start()}
    cpu: dict[str, float] = {}
    threads_at_start = os.environ.get("OMP_NUM_THREADS")

    def mark(name: str) -> None:
        marks[name] = _boot_clock()
        cpu[name] = time.process_time()

    import hf_distill.recipe as recipe  # what recipes/<task>.py imports

    mark("imported")

    def timed(name: str, function):
        def wrapper(*args, **kwargs):
            mark(f"{name} begin")
            try:
                return function(*args, **kwargs)
            finally:
                mark(f"{name} end")

        return wrapper

    # Timers around the stages run_distillation calls by name (module globals of hf_distill.recipe).
    for name, attribute in (
        ("data", "load_ranking_dataset"),
        ("eval data", "load_eval_dataset"),
        ("model load", "load_student"),
        ("save", "save_student"),
        ("eval after", "_evaluate_all"),
        ("report + card", "write_card_and_push"),
    ):
        setattr(recipe, attribute, timed(name, getattr(recipe, attribute)))
    steps: list[float] = []
    state: dict[str, object] = {}

    from transformers import TrainerCallback

    class StageTimer(TrainerCallback):
        def on_train_begin(self, args, state_, control, **kwargs):
            import torch

            state["torch_threads"] = torch.get_num_threads()
            mark("train begin")

        def on_evaluate(self, args, state_, control, **kwargs):
            if "epoch begin" not in marks:
                mark("eval before end")

        def on_epoch_begin(self, args, state_, control, **kwargs):
            if "epoch begin" not in marks:
                mark("epoch begin")
            steps.append(_boot_clock())

        def on_step_end(self, args, state_, control, **kwargs):
            steps.append(_boot_clock())

    for cls_name in ("RerankerDistillationTrainer", "EmbeddingDistillationTrainer"):
        base = getattr(recipe, cls_name)

        class Timed(base):  # noqa: D401 - the recipe's trainer, timed
            def __init__(self, *args, **kwargs):
                mark("trainer init begin")
                super().__init__(*args, **kwargs)
                self.add_callback(StageTimer())
                mark("trainer init end")

            def train(self, *args, **kwargs):
                mark("train call")
                try:
                    output = super().train(*args, **kwargs)
                    state["train_runtime"] = output.metrics.get("train_runtime")
                    return output
                finally:
                    mark("train return")

        Timed.__name__ = Timed.__qualname__ = cls_name
        setattr(recipe, cls_name, Timed)

    mark("run begin")
    sys.argv = [script, *argv]
    runpy.run_path(script, run_name="__main__")  # the recipe script itself, as `python recipes/<task>.py` runs it
    mark("run end")
    result = {
        "marks": marks,
        "cpu": cpu,
        "steps": steps,
        "torch_threads": state.get("torch_threads"),
        "omp_num_threads_at_start": threads_at_start,
        "train_runtime_s": state.get("train_runtime"),
        "hf_distill": recipe.__file__,
    }
    Path(out_path).write_text(json.dumps(result), encoding="utf-8")


# ---------------------------------------------------------------------------------------------------------------
# The parent: interleaved whole-process runs, then the table
# ---------------------------------------------------------------------------------------------------------------


def stages_of(child_result: dict, launched_at: float, ended_at: float) -> dict[str, float]:
    """Wall seconds per stage (``STAGES``), training steps and the fixed cost, from one child's marks."""
    m = child_result["marks"]
    steps = child_result["steps"]
    # Steps: each epoch starts at its on_epoch_begin; a step runs from the previous mark to its on_step_end.
    durations = [b - a for a, b in zip(steps, steps[1:])]
    median_step = statistics.median(durations[1:]) if len(durations) > 1 else 0.0
    first_excess = max(durations[0] - median_step, 0.0) if durations else 0.0
    in_steps = (steps[-1] - steps[0]) if steps else 0.0
    data = (m["data end"] - m["data begin"]) + (
        (m["eval data end"] - m["eval data begin"]) if "eval data begin" in m else 0.0
    )
    eval_before = m["eval before end"] - m["train begin"] if "eval before end" in m else 0.0
    out = {
        "launcher": m["start"] - launched_at,
        "imports": m["imported"] - m["start"],
        "setup": m["data begin"] - m["imported"],
        "data": data,
        "model load": m["model load end"] - m["model load begin"],
        "trainer init": m["trainer init end"] - m["trainer init begin"],
        "train setup": m["train begin"] - m["train call"],
        "eval before": eval_before,
        "first step excess": first_excess,
        "train end": m["train return"] - steps[-1],
        "save": m["save end"] - m["save begin"],
        "eval after": (m["eval after end"] - m["eval after begin"]) if "eval after begin" in m else 0.0,
        "report + card": (m["report + card end"] - m["report + card begin"]) if "report + card begin" in m else 0.0,
        "exit": ended_at - m["run end"],
    }
    wall = ended_at - launched_at
    accounted = sum(out.values()) + in_steps - first_excess
    out["other"] = wall - accounted  # between the timed stages (e.g. set_seed, building the report)
    out["training steps"] = in_steps
    out["steps"] = len(durations)
    out["median step"] = median_step
    out["wall"] = wall
    out["fixed"] = wall - in_steps
    return out


def run_once(launch: str, code_dir: str | None, task: str, recipe_args: list[str], work: Path, tag: str) -> dict:
    out_json = work / f"{tag}.json"
    here = str(Path(__file__).resolve())
    script = Path(code_dir or Path(here).parents[1]) / "recipes" / f"{task}.py"
    inner = [here, "_child", str(out_json), str(script), *recipe_args, "--output_dir", str(work / tag)]
    if launch == "python":
        command = [sys.executable, *inner]
    else:
        accelerate = str(Path(sys.executable).with_name("accelerate"))
        command = [accelerate, "launch", "--num_processes", "1", "--num_machines", "1"]
        command += ["--mixed_precision", "no", "--dynamo_backend", "no", *inner]
    env = {**os.environ}
    if code_dir is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (code_dir, env.get("PYTHONPATH")) if p)
    log_path = work / f"{tag}.log"
    with open(log_path, "w", encoding="utf-8") as log:
        launched_at = _boot_clock()
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        ended_at = _boot_clock()
    if os.waitstatus_to_exitcode(status) != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"run failed: {' '.join(command)}\n{tail}")
    result = json.loads(out_json.read_text(encoding="utf-8"))
    stages = stages_of(result, launched_at, ended_at)
    stages["cpu"] = usage.ru_utime + usage.ru_stime
    stages["torch threads"] = result["torch_threads"]
    stages["OMP_NUM_THREADS"] = result["omp_num_threads_at_start"]
    stages["train_runtime"] = result["train_runtime_s"]
    thread_line = [line for line in log_path.read_text(encoding="utf-8").splitlines() if "torch threads:" in line]
    stages["thread log"] = thread_line[0].split("hf_distill: ", 1)[-1] if thread_line else None
    return stages


def _median(runs: list[dict], key: str) -> float:
    return statistics.median(float(r[key]) for r in runs)


def table(results: dict[str, list[dict]]) -> str:
    names = list(results)
    lines = [
        "| stage (median s) | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    rows = ["wall", "training steps", "fixed", *STAGES, "other", "cpu", "median step", "steps", "train_runtime"]
    for row in rows:
        cells = [
            f"{_median(results[n], row):.2f}" if row != "steps" else f"{_median(results[n], row):.0f}" for n in names
        ]
        label = {"fixed": "**fixed (wall - steps)**", "cpu": "CPU s (process + children)"}.get(row, row)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    threads = [str(results[n][0]["torch threads"]) for n in names]
    lines.append("| torch threads | " + " | ".join(threads) + " |")
    omp = [str(results[n][0]["OMP_NUM_THREADS"]) for n in names]
    lines.append("| OMP_NUM_THREADS seen | " + " | ".join(omp) + " |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        child(sys.argv[2], sys.argv[3], sys.argv[4:])
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import MAX_LENGTH, STUDENT_LAYERS, minilm_path, prepare_data

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=("reranker", "embedding"), default="reranker")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train_queries", type=int, default=100)
    parser.add_argument("--eval", action="store_true", help="add both eval sets: evaluation before and after")
    parser.add_argument("--launch", nargs="+", choices=LAUNCHES, default=list(LAUNCHES))
    parser.add_argument(
        "--code",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="also run the hf_distill package under DIR (DIR/hf_distill), side by side; repeatable",
    )
    parser.add_argument("--cache_dir", default="/tmp/hf_distill_bench_cache", help="teacher-scored quickstart data")
    parser.add_argument("--output_dir", default="/tmp/hf_distill_fixed_cost")
    parser.add_argument("--output_json", default=None, help="write every run's numbers here")
    parser.add_argument(
        "--imports", action="store_true", help="only the import floor: torch, transformers' Trainer, hf_distill.recipe"
    )
    args = parser.parse_args()
    if args.imports:
        print(import_floor(max(args.repeats, 1)))
        return
    if args.repeats < 1 or args.train_queries < 1:
        parser.error("--repeats and --train_queries must be at least 1")
    codes: dict[str, str | None] = {"current": None}
    for item in args.code:
        name, sep, path = item.partition("=")
        if not sep or not name or not (Path(path) / "hf_distill" / "__init__.py").is_file():
            parser.error(f"--code {item!r}: expected NAME=DIR with DIR/hf_distill/__init__.py")
        codes[name] = str(Path(path).resolve())

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    files = prepare_data(args.cache_dir)
    recipe_args = [
        "--model_name_or_path",
        minilm_path(),
        "--num_hidden_layers",
        str(STUDENT_LAYERS),
        "--train_file",
        files["train"],
        "--max_train_groups",
        str(args.train_queries),
        "--max_length",
        str(MAX_LENGTH),
        "--num_train_epochs",
        "1",
        "--min_train_steps",  # exactly one epoch: the run, not the fresh head's 100-step minimum
        "0",
        "--save_strategy",
        "no",
        "--report_to",
        "none",
        "--logging_steps",
        "25",
        "--disable_tqdm",
        "true",
    ]
    if args.eval:
        recipe_args += ["--eval_file", files["eval_in_domain"], files["eval_out_of_domain"]]
    work = Path(args.output_dir)
    work.mkdir(parents=True, exist_ok=True)
    variants = [(code, launch) for code in codes for launch in args.launch]
    results: dict[str, list[dict]] = {f"{code} {launch}": [] for code, launch in variants}
    for repeat in range(args.repeats):
        order = variants[repeat % len(variants) :] + variants[: repeat % len(variants)]
        for code, launch in order:
            name = f"{code} {launch}"
            tag = f"{code}_{launch}_{repeat}"
            stages = run_once(launch, codes[code], args.task, recipe_args, work, tag)
            results[name].append(stages)
            print(
                f"[{repeat + 1}/{args.repeats}] {name}: wall {stages['wall']:.1f} s, steps "
                f"{stages['training steps']:.1f} s, fixed {stages['fixed']:.1f} s, CPU {stages['cpu']:.1f} s, "
                f"torch threads {stages['torch threads']}",
                flush=True,
            )
    print()
    print(
        f"{args.task}, {args.train_queries} train queries, 1 epoch, max_length {MAX_LENGTH}"
        f"{', both eval sets' if args.eval else ', no eval sets'}; {args.repeats} repeat(s), interleaved; "
        f"{len(os.sched_getaffinity(0))} cores"
    )
    print(table(results))
    for name, runs in results.items():
        if runs[0]["thread log"]:
            print(f"{name}: {runs[0]['thread log']}")
    if args.output_json:
        Path(args.output_json).write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
