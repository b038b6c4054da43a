"""Ablation that picks the recipe defaults: loss, temperatures, learning rate, group size, hard-label weight.

Same data and student as ``benchmarks/distillation_benchmark.py``: the quickstart set scored by the full
all-MiniLM-L6-v2 (cosines), a student made of MiniLM's first 2 layers, max_length 128, 1 epoch on the 600 train
queries, CPU. Each run is ``python recipes/{reranker,embedding}.py ...`` with the flags of its row; the metrics
are the recipe's own after-training evaluation on eval_in_domain and eval_out_of_domain.

Coordinate descent, one stage at a time: every stage changes one knob of the best configuration so far (best =
highest eval_in_domain MAP; out-of-domain MAP is reported to check that the pick generalises). Results are saved
after every run to ``<output_dir>/ablation.json``; a rerun skips the runs already there.

Usage::

    python benchmarks/ablation.py --output_dir /tmp/hf_distill_ablation            # both students (~40 min, 2 cores)
    python benchmarks/ablation.py --students reranker --output_dir /tmp/abl
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import MAX_LENGTH, ROOT, STUDENT_LAYERS, load_json, minilm_path, prepare_data, run_timed, save_json

# Starting point of the search; learning_rate etc. are set explicitly so the table does not depend on the
# defaults this ablation changes.
BASE = {
    "reranker": {
        "loss": "listnet",
        "teacher_temperature": "auto",
        "student_temperature": 1.0,
        "learning_rate": 1e-4,
        "group_size": 16,
        "hard_label_weight": 0.0,
        "per_device_train_batch_size": 8,
        "dropout": "keep",
    },
    "embedding": {
        "loss": "listnet",
        "teacher_temperature": "auto",
        "student_temperature": 1.0,
        "learning_rate": 1e-4,
        "similarity_scale": 20.0,
        "group_size": 16,
        "hard_label_weight": 0.0,
        "per_device_train_batch_size": 8,
        "dropout": "keep",
    },
}
LISTWISE = ("listnet", "kl")

# stage name -> list of (row name, overrides of the best configuration so far); None = the stage's start row.
STAGES = {
    "reranker": [
        # kl is left out: with T_s = 1 it is listnet minus the teacher's entropy (a constant), same gradients.
        (
            "loss",
            [
                (
                    "old default: listnet T_t=1, lr 5e-5",
                    {"loss": "listnet", "teacher_temperature": 1.0, "learning_rate": 5e-5},
                ),
                ("listnet T_t=auto", {"loss": "listnet"}),
                ("ranknet", {"loss": "ranknet"}),
            ],
        ),
        # MiniLM's dropout 0.1 vs none while training (the checkpoint's config keeps its own value either way).
        (
            "dropout",
            [
                ("dropout 0", {"dropout": "0"}),
            ],
        ),
        (
            "learning rate",
            [
                ("lr 3e-4", {"learning_rate": 3e-4}),
                ("lr 1e-3", {"learning_rate": 1e-3}),
                ("lr 3e-3", {"learning_rate": 3e-3}),
            ],
        ),
        (
            "group size",
            [
                ("group_size 8", {"group_size": 8}),
            ],
        ),
        # Run last (the machine was shared and slow): pairwise regressions, at the best lr / group size so far.
        (
            "loss (pairwise regression)",
            [
                ("margin_mse (all pairs)", {"loss": "margin_mse"}),
                ("margin_mse_triplets (seed's 8x4)", {"loss": "margin_mse_triplets"}),
            ],
        ),
        (
            "temperature",
            [
                ("T_t = 2 x auto (0.3)", {"teacher_temperature": 0.3}),
            ],
        ),
        (
            "hard labels",
            [
                ("hard_label_weight 0.5", {"hard_label_weight": 0.5}),
            ],
        ),
        # Half the queries per step: half the activations kept for the listwise backward, twice the steps.
        (
            "batch size",
            [
                ("batch 4 queries", {"per_device_train_batch_size": 4}),
            ],
        ),
    ],
    "embedding": [
        (
            "loss",
            [
                ("listnet T_t=auto, scale 20", {"loss": "listnet"}),
                ("listnet T_t=auto, scale 7 (~1/teacher spread)", {"loss": "listnet", "similarity_scale": 7.0}),
                (
                    "old default: listnet T_t=1, scale 1, lr 5e-5",
                    {"loss": "listnet", "teacher_temperature": 1.0, "similarity_scale": 1.0, "learning_rate": 5e-5},
                ),
            ],
        ),
        (
            "dropout",
            [
                ("dropout 0", {"dropout": "0"}),
            ],
        ),
        (
            "learning rate",
            [
                ("lr 3e-4", {"learning_rate": 3e-4}),
                ("lr 1e-3", {"learning_rate": 1e-3}),
            ],
        ),
        (
            "group size",
            [
                ("group_size 8", {"group_size": 8}),
            ],
        ),
        (
            "batch size",
            [
                ("batch 4 queries", {"per_device_train_batch_size": 4}),
            ],
        ),
    ],
}


def run_one(kind: str, config: dict, files: dict[str, str], output_dir: Path) -> dict:
    digest = hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]
    run_dir = output_dir / "runs" / f"{kind}-{digest}"
    command = [
        sys.executable,
        str(ROOT / "recipes" / f"{kind}.py"),
        "--model_name_or_path",
        minilm_path(),
        "--num_hidden_layers",
        str(STUDENT_LAYERS),
        "--train_file",
        files["train"],
        "--eval_file",
        files["eval_in_domain"],
        files["eval_out_of_domain"],
        "--output_dir",
        str(run_dir),
        "--max_length",
        str(MAX_LENGTH),
        "--num_train_epochs",
        "1",
        "--eval_strategy",
        "no",
        "--save_strategy",
        "no",
        "--report_to",
        "none",
        "--disable_tqdm",
        "true",
        "--evaluate_before_training",
        "false",
    ]
    for key, value in config.items():
        command += [f"--{key}", str(value)]
    run_dir.mkdir(parents=True, exist_ok=True)
    timing = run_timed(command, run_dir / "log.txt")
    report = json.loads((run_dir / "distillation_report.json").read_text())
    metrics = {
        split: {k: report["metrics_after"][split][k] for k in ("map", "mrr@10", "ndcg@10")}
        for split in ("eval_in_domain", "eval_out_of_domain")
    }
    return {**timing, "train_runtime_s": report["train_runtime_s"], "metrics": metrics}


def markdown_table(results: list[dict]) -> str:
    """One row per run: what changed, the full configuration and MAP / MRR@10 / NDCG@10 on both eval splits."""
    lines = [
        "| student | stage | run | loss | T_t | lr | group | batch | hard | dropout | MAP in | MRR@10 in | NDCG@10 in | MAP ood | "
        "MRR@10 ood | NDCG@10 ood | wall s | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        c, m = r["config"], r["metrics"]
        rss = f"{r['peak_rss_mib']:.0f}" if "peak_rss_mib" in r else "-"  # not recorded for the first rows
        splits, keys = ("eval_in_domain", "eval_out_of_domain"), ("map", "mrr@10", "ndcg@10")
        cells = " | ".join(f"{m[split][k]:.4f}" for split in splits for k in keys)
        lines.append(
            f"| {r['student']} | {r['stage']} | {r['name']} | {c['loss']} | {c['teacher_temperature']} | "
            f"{c['learning_rate']:g} | {c['group_size']} | {c['per_device_train_batch_size']} | {c['hard_label_weight']} | "
            f"{c.get('dropout', 'keep')} | {cells} | {r['wall_s']:.0f} | {rss} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="/tmp/hf_distill_ablation")
    parser.add_argument("--cache_dir", default="/tmp/hf_distill_bench_cache", help="teacher-scored data")
    parser.add_argument("--students", nargs="+", default=["reranker", "embedding"], choices=["reranker", "embedding"])
    parser.add_argument(
        "--report", nargs="*", default=None, help="only print the markdown table of these output dirs' ablation.json"
    )
    parser.add_argument("--base", default=None, help="JSON object of overrides of the starting configuration")
    parser.add_argument(
        "--rows",
        nargs="*",
        default=None,
        help="run only the rows with these names (e.g. to split the work between "
        "processes, each with its own --output_dir); rows already in ablation.json are always reported",
    )
    args = parser.parse_args()
    if args.report is not None:
        rows = [r for d in args.report for r in load_json(Path(d) / "ablation.json", [])]
        print(markdown_table(sorted(rows, key=lambda r: list(STAGES).index(r["student"]))))  # stable: run order
        return
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    files = prepare_data(args.cache_dir)
    results_path = output_dir / "ablation.json"
    results = load_json(results_path, [])
    for r in results:  # rows measured before the dropout knob existed ran with the checkpoint's dropout
        r["config"].setdefault("dropout", "keep")

    for kind in args.students:
        best = {**BASE[kind], **(json.loads(args.base) if args.base else {})}
        best_map = -1.0
        for stage, rows in STAGES[kind]:
            if stage == "temperature" and best["loss"] not in LISTWISE:
                continue  # temperatures only act on listwise losses
            stage_best = None
            for name, overrides in rows:
                config = {**best, **overrides}
                done = next((r for r in results if r["student"] == kind and r["config"] == config), None)
                if done is None and args.rows is not None and name not in args.rows:
                    continue
                if done is None:
                    print(f"[{kind}] {stage}: {name} ...", flush=True)
                    outcome = run_one(kind, config, files, output_dir)
                    done = {"student": kind, "stage": stage, "name": name, "config": config, **outcome}
                    results.append(done)
                    save_json(results_path, results)
                m = done["metrics"]
                print(
                    f"[{kind}] {stage:24s} {name:40s} MAP in {m['eval_in_domain']['map']:.4f} "
                    f"ood {m['eval_out_of_domain']['map']:.4f}  ({done['wall_s']:.0f} s)",
                    flush=True,
                )
                if m["eval_in_domain"]["map"] > best_map:
                    best_map, stage_best = m["eval_in_domain"]["map"], config
            if stage_best is not None:
                best = stage_best
        print(f"[{kind}] best: {best} (MAP in-domain {best_map:.4f})", flush=True)
        save_json(output_dir / f"best_{kind}.json", {"config": best, "map_in_domain": best_map})


if __name__ == "__main__":
    main()
