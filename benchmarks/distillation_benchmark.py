"""hf_distill vs the reference practice (sentence-transformers), side by side, on the same real text.

One run trains, on the quickstart set scored by the full all-MiniLM-L6-v2 (an embedding teacher: cosines), the
same student (all-MiniLM-L6-v2 cut to its first 2 layers), max_length 128, 1 epoch, CPU:

* ``practice_reranker``: ``CrossEncoderTrainer`` + cross-encoder ``MarginMSELoss`` on the seed's triplets (each
  teacher-scored list sorted by teacher score; top 8 x the next 4 as (query, positive, negative), label = teacher
  margin), batch 16, lr 5e-5.
* ``practice_embedding``: ``SentenceTransformerTrainer`` + ``DistillKLDivLoss(temperature=2)`` on the same
  (query, positive, negative) rows with labels ``[s_pos, s_neg]``, batch 16, lr 5e-5.
* ``hf_distill_reranker`` / ``hf_distill_embedding``: ``python recipes/{reranker,embedding}.py`` with its defaults
  and only ``--model_name_or_path --num_hidden_layers 2 --train_file --output_dir --max_length 128`` (plus 1 epoch,
  no evaluation or checkpoints during training).
* ``hf_distill_reranker_gradient_cache``: the reranker recipe with ``--gradient_cache true
  --micro_batch_max_tokens 2048``: the memory knob (one micro-batch's activations at a time, same gradients).

Every pipeline is a separate process, timed whole (imports, data, model load, training, save); repeats are
interleaved (the order rotates) so a busy machine slows every pipeline alike; min and median are reported. Then
every student is evaluated by the same code (:mod:`benchmarks.common`): MAP / MRR@10 / NDCG@10 on eval_in_domain
and eval_out_of_domain, next to the teacher and the untrained students. Student forwards and the real-token share
are counted by replaying each pipeline's batches (hf_distill: its own train dataloader; sentence-transformers:
random batches of 16 rows, each column padded to its longest, as its collator does).

Writes ``<output_dir>/results.json``, ``benchmarks/distillation_time_vs_map.png`` and the table between the
``<!-- distillation-benchmark -->`` markers of ``BENCHMARKS.md``.

Usage::

    python benchmarks/distillation_benchmark.py --repeats 3             # ~85 min on 2 CPU cores
    python benchmarks/distillation_benchmark.py --quick                 # smoke run: 48 train queries, 1 repeat
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    EVAL_SPLITS,
    MAX_LENGTH,
    ROOT,
    STUDENT_LAYERS,
    evaluate_embedding,
    evaluate_reranker,
    load_json,
    minilm_path,
    prepare_data,
    read_rows,
    run_timed,
    save_json,
    teacher_metrics,
    untrained_embedding_student,
)

# hf_distill's pipelines: name -> (recipe, flags beyond recipe_argv). The gradient-cache row shows the memory knob:
# activations of one 2,048-token micro-batch instead of the whole step's, same gradients, one more forward.
OURS = {
    "hf_distill_reranker": ("reranker", []),
    "hf_distill_embedding": ("embedding", []),
    "hf_distill_reranker_gradient_cache": (
        "reranker",
        ["--gradient_cache", "true", "--micro_batch_max_tokens", "2048"],
    ),
}
PIPELINES = (
    "practice_reranker",
    "hf_distill_reranker",
    "practice_embedding",
    "hf_distill_embedding",
    "hf_distill_reranker_gradient_cache",
)
PRACTICE = {"batch_size": 16, "learning_rate": 5e-5, "top_k": 8, "num_negatives": 4, "kl_temperature": 2.0}
MARK_START, MARK_END = "<!-- distillation-benchmark:start -->", "<!-- distillation-benchmark:end -->"


# ---------------------------------------------------------------------------------------------------------------
# The reference practice (run in a child process: `distillation_benchmark.py _practice_reranker ...`)
# ---------------------------------------------------------------------------------------------------------------


def practice_triplets(train_file: str) -> list[dict]:
    from hf_distill.data import build_reference_triplets, read_groups

    return build_reference_triplets(read_groups(train_file), PRACTICE["top_k"], PRACTICE["num_negatives"])


def practice_dataset(train_file: str, label_column: str, label):
    """The practice's training rows: (query, positive, negative) columns and ``label(triplet)`` as the label."""
    from datasets import Dataset

    triplets = practice_triplets(train_file)
    columns = {c: [t[c] for t in triplets] for c in ("query", "positive", "negative")}
    return Dataset.from_dict({**columns, label_column: [label(t) for t in triplets]})


def _practice_args(cls, output_dir: str):
    return cls(
        output_dir=output_dir,
        num_train_epochs=1,
        per_device_train_batch_size=PRACTICE["batch_size"],
        learning_rate=PRACTICE["learning_rate"],
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        logging_steps=100,
        seed=42,
    )


class _Progress:
    """Prints elapsed seconds at each log so a long practice run shows where it is (logging costs nothing here)."""

    def __new__(cls):
        from transformers import TrainerCallback

        class Progress(TrainerCallback):
            start = time.perf_counter()

            def on_log(self, args, state, control, logs=None, **kwargs):
                elapsed = time.perf_counter() - self.start
                print(f"[progress] step {state.global_step}/{state.max_steps} {elapsed:.0f} s", flush=True)

        return Progress()


def train_practice_reranker(train_file: str, output_dir: str) -> None:
    import torch
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import MarginMSELoss
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    train_dataset = practice_dataset(train_file, "score", lambda t: t["score"])  # label = teacher margin
    # The same start as the recipe: MiniLM's first 2 layers and a fresh one-logit head.
    init_dir = os.path.join(output_dir, "init")
    torch.manual_seed(42)
    AutoModelForSequenceClassification.from_pretrained(
        minilm_path(), num_labels=1, num_hidden_layers=STUDENT_LAYERS
    ).save_pretrained(init_dir)
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(init_dir)
    model = CrossEncoder(init_dir, num_labels=1, max_length=MAX_LENGTH, device="cpu")
    trainer = CrossEncoderTrainer(
        model=model,
        args=_practice_args(CrossEncoderTrainingArguments, output_dir),
        train_dataset=train_dataset,
        loss=MarginMSELoss(model),
        callbacks=[_Progress()],
    )
    trainer.train()
    model.save_pretrained(os.path.join(output_dir, "final"))


def train_practice_embedding(train_file: str, output_dir: str) -> None:
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import DistillKLDivLoss

    train_dataset = practice_dataset(train_file, "label", lambda t: [t["positive_score"], t["negative_score"]])
    model = untrained_embedding_student()
    trainer = SentenceTransformerTrainer(
        model=model,
        args=_practice_args(SentenceTransformerTrainingArguments, output_dir),
        train_dataset=train_dataset,
        loss=DistillKLDivLoss(model, temperature=PRACTICE["kl_temperature"]),
        callbacks=[_Progress()],
    )
    trainer.train()
    model.save(os.path.join(output_dir, "final"))


# ---------------------------------------------------------------------------------------------------------------
# Commands, counting, evaluation
# ---------------------------------------------------------------------------------------------------------------


def pipeline_kind(pipeline: str) -> str:
    return OURS[pipeline][0] if pipeline in OURS else pipeline.removeprefix("practice_")


def recipe_argv(pipeline: str, train_file: str, output_dir: str) -> list[str]:
    """The flags the issue allows: model, layer cut, data, output, max_length; plus 1 epoch and no eval/saves."""
    return [
        "--model_name_or_path",
        minilm_path(),
        "--num_hidden_layers",
        str(STUDENT_LAYERS),
        "--train_file",
        train_file,
        "--output_dir",
        output_dir,
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
        *OURS[pipeline][1],
    ]


def command_for(pipeline: str, train_file: str, output_dir: str) -> list[str]:
    if pipeline in OURS:
        recipe = ROOT / "recipes" / f"{pipeline_kind(pipeline)}.py"
        return [sys.executable, str(recipe), *recipe_argv(pipeline, train_file, output_dir)]
    return [sys.executable, __file__, f"_{pipeline}", train_file, output_dir]


def final_model_dir(pipeline: str, output_dir: str) -> str:
    return output_dir if pipeline in OURS else os.path.join(output_dir, "final")


def count_ours(pipeline: str, train_file: str, output_dir: str) -> dict[str, float]:
    """Replay the recipe's own train dataloader (same args, same seed): forwards and real-token share."""
    from transformers import HfArgumentParser

    from hf_distill.data import load_ranking_dataset
    from hf_distill.model_loading import ModelArguments, load_student
    from hf_distill.recipe import ScriptArguments
    from hf_distill.trainer import DistillationArguments, EmbeddingDistillationTrainer, RerankerDistillationTrainer

    parser = HfArgumentParser((ScriptArguments, ModelArguments, DistillationArguments))
    _, model_args, training_args = parser.parse_args_into_dataclasses(recipe_argv(pipeline, train_file, output_dir))
    kind = pipeline_kind(pipeline)
    model, tokenizer = load_student(kind, model_args)
    cls = RerankerDistillationTrainer if kind == "reranker" else EmbeddingDistillationTrainer
    train_dataset = load_ranking_dataset(train_file)
    trainer = cls(model=model, args=training_args, train_dataset=train_dataset, processing_class=tokenizer)
    forwards = real = padded = 0
    for batch in trainer.get_train_dataloader():
        forwards += sum(len(mb["input_ids"]) for mb in batch["micro_batches"])
        real += int(batch["num_real_tokens"])
        padded += int(batch["num_padded_tokens"])
    return {
        "student_forwards": forwards,
        "real_token_share": real / padded,
        "learning_rate": training_args.learning_rate,
        "loss": training_args.loss,
        "batch_size": training_args.per_device_train_batch_size,
        "group_size": training_args.group_size,
    }


def count_practice(kind: str, train_file: str) -> dict[str, float]:
    """sentence-transformers' batches: 16 random rows, each column (pairs or texts) padded to its own longest."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    triplets = practice_triplets(train_file)
    order = list(range(len(triplets)))
    random.Random(42).shuffle(order)
    forwards = real = padded = 0
    for start in range(0, len(order), PRACTICE["batch_size"]):
        batch = [triplets[i] for i in order[start : start + PRACTICE["batch_size"]]]
        if kind == "reranker":
            columns = [
                tokenizer([t["query"] for t in batch], [t[c] for t in batch], truncation=True, max_length=MAX_LENGTH)
                for c in ("positive", "negative")
            ]
        else:
            columns = [
                tokenizer([t[c] for t in batch], truncation=True, max_length=MAX_LENGTH)
                for c in ("query", "positive", "negative")
            ]
        for encoded in columns:
            lengths = [len(ids) for ids in encoded["input_ids"]]
            forwards += len(lengths)
            real += sum(lengths)
            padded += len(lengths) * max(lengths)
    return {
        "student_forwards": forwards,
        "real_token_share": real / padded,
        "learning_rate": PRACTICE["learning_rate"],
        "loss": (
            "MarginMSELoss (triplets)" if kind == "reranker" else f"DistillKLDivLoss (T={PRACTICE['kl_temperature']})"
        ),
        "batch_size": PRACTICE["batch_size"],
        "triplets": len(triplets),
    }


def untrained_reranker_metrics(files: dict[str, str]) -> dict:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(42)
    model = AutoModelForSequenceClassification.from_pretrained(
        minilm_path(), num_labels=1, num_hidden_layers=STUDENT_LAYERS
    )
    return evaluate_reranker(model, files, tokenizer=AutoTokenizer.from_pretrained(minilm_path()))


# ---------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------


def summarise(results: dict) -> dict:
    summary = {}
    for pipeline in PIPELINES:
        runs = results["runs"].get(pipeline, [])
        if not runs:
            continue
        walls = [r["wall_s"] for r in runs]
        rss = [r["peak_rss_mib"] for r in runs]
        cpu = [r.get("cpu_s", float("nan")) for r in runs]
        summary[pipeline] = {
            "repeats": len(runs),
            "wall_min": min(walls),
            "wall_median": statistics.median(walls),
            "cpu_min": min(cpu),
            "cpu_median": statistics.median(cpu),
            "rss_max": max(rss),
            "rss_median": statistics.median(rss),
            **results["counts"].get(pipeline, {}),
            "metrics": results["metrics"].get(pipeline),
        }
    return summary


def goals(summary: dict, references: dict) -> list[tuple[str, bool, str]]:
    out = []

    def m(pipeline, split="eval_in_domain"):
        return summary[pipeline]["metrics"][split]["map"]

    # (goal label, our pipeline, the practice it replaces, speed-up target); the gradient-cache row is held to the
    # reranker's goals too, so the memory knob's cost in time and quality shows next to its memory.
    comparisons = (
        ("reranker", "hf_distill_reranker", "practice_reranker", 4.0),
        ("embedding", "hf_distill_embedding", "practice_embedding", 2.5),
        ("reranker --gradient_cache", "hf_distill_reranker_gradient_cache", "practice_reranker", 4.0),
    )
    for label, ours, theirs, target in comparisons:
        if not (summary.get(ours, {}).get("metrics") and summary.get(theirs, {}).get("metrics")):
            continue
        speedup = summary[theirs]["wall_median"] / summary[ours]["wall_median"]
        cpu_speedup = summary[theirs]["cpu_median"] / summary[ours]["cpu_median"]
        out.append((f"{label}: >= {target}x faster per epoch (median wall)", speedup >= target, f"{speedup:.2f}x"))
        out.append((f"{label}: >= {target}x less CPU time per epoch", cpu_speedup >= target, f"{cpu_speedup:.2f}x"))
        for split in EVAL_SPLITS:
            delta = m(ours, split) - m(theirs, split)
            measured = f"{m(ours, split):.4f} vs {m(theirs, split):.4f} ({delta:+.4f})"
            out.append((f"{label}: MAP >= practice ({split})", delta >= 0, measured))
        share = summary[ours]["real_token_share"]
        out.append((f"{label}: >= 95% real tokens per student batch", share >= 0.95, f"{share:.1%}"))
        rss_ours, rss_theirs = summary[ours]["rss_median"], summary[theirs]["rss_median"]
        out.append(
            (f"{label}: peak RSS <= practice", rss_ours <= rss_theirs, f"{rss_ours:.0f} vs {rss_theirs:.0f} MiB")
        )
    if "hf_distill_embedding" in summary and summary["hf_distill_embedding"]["metrics"]:
        for split in EVAL_SPLITS:
            start = references["untrained_embedding"][split]["map"]
            top = references["teacher"][split]["map"]
            closed = (m("hf_distill_embedding", split) - start) / (top - start)
            goal = f"embedding closes >= half the untrained-to-teacher gap ({split})"
            out.append((goal, closed >= 0.5, f"{closed:.0%}"))
    return out


LABELS = {
    "practice_reranker": "sentence-transformers CrossEncoderTrainer + MarginMSE triplets",
    "hf_distill_reranker": "hf_distill recipes/reranker.py (defaults)",
    "practice_embedding": "sentence-transformers SentenceTransformerTrainer + DistillKLDiv",
    "hf_distill_embedding": "hf_distill recipes/embedding.py (defaults)",
    "hf_distill_reranker_gradient_cache": "hf_distill recipes/reranker.py --gradient_cache (2,048-token micro-batches)",
}


def markdown(results: dict, summary: dict, goal_rows) -> str:
    refs = results["references"]
    lines = [
        f"Measured {results['date']} on {results['machine']}; "
        f"{max((s['repeats'] for s in summary.values()), default=0)} repeat(s), interleaved"
        f"{' (QUICK smoke run)' if results['quick'] else ''}. "
        f"Train: {results['train_groups']} queries x 16 candidates; "
        f"eval: {results.get('eval_groups', 150)} queries each. "
        "Wall = whole process (imports, data, model load, 1 epoch, save).",
        "",
        "| pipeline | loss | wall s/epoch min | median | CPU s median | student forwards | real tokens | "
        "peak RSS MiB | "
        "MAP in | MRR@10 in | NDCG@10 in | MAP ood | MRR@10 ood | NDCG@10 ood |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def metric_cells(metrics):
        return " | ".join(f"{metrics[s][k]:.4f}" for s in EVAL_SPLITS for k in ("map", "mrr@10", "ndcg@10"))

    for name, key in (
        ("teacher: all-MiniLM-L6-v2 (6 layers, cosine)", "teacher"),
        ("untrained student: 2 layers, cosine", "untrained_embedding"),
        ("untrained student: 2 layers + fresh head (reranker)", "untrained_reranker"),
    ):
        lines.append(f"| {name} |{' - |' * 7} {metric_cells(refs[key])} |")
    for pipeline in PIPELINES:
        if pipeline not in summary or not summary[pipeline]["metrics"]:
            continue
        s = summary[pipeline]
        lines.append(
            f"| {LABELS[pipeline]} | {s['loss']}, lr {s['learning_rate']:g}, batch {s['batch_size']} | "
            f"{s['wall_min']:.1f} | {s['wall_median']:.1f} | {s['cpu_median']:.0f} | {s['student_forwards']:,} | "
            f"{s['real_token_share']:.1%} | {s['rss_median']:.0f} | "
            f"{metric_cells(s['metrics'])} |"
        )
    lines += ["", "| goal | met | measured |", "|---|---|---|"]
    lines += [f"| {name} | {'yes' if ok else '**no**'} | {value} |" for name, ok, value in goal_rows]
    return "\n".join(lines)


def write_chart(summary: dict, references: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=False)
    for ax, kind in zip(axes, ("reranker", "embedding")):
        for pipeline, marker in ((f"practice_{kind}", "s"), (f"hf_distill_{kind}", "o")):
            s = summary.get(pipeline)
            if not s or not s["metrics"]:
                continue
            for split, color in zip(EVAL_SPLITS, ("tab:blue", "tab:orange")):
                ax.scatter(s["wall_median"], s["metrics"][split]["map"], marker=marker, color=color, s=60)
                ax.annotate(
                    f"{'sentence-transformers' if 'practice' in pipeline else 'hf_distill'} ({split.split('_', 1)[1]})",
                    (s["wall_median"], s["metrics"][split]["map"]),
                    textcoords="offset points",
                    xytext=(6, 4),
                    fontsize=8,
                )
        for split, color in zip(EVAL_SPLITS, ("tab:blue", "tab:orange")):
            ax.axhline(references["teacher"][split]["map"], color=color, linestyle="--", linewidth=1)
            start = references["untrained_embedding" if kind == "embedding" else "untrained_reranker"][split]["map"]
            ax.axhline(start, color=color, linestyle=":", linewidth=1)
        ax.set_title(f"{kind} student (2 layers), 1 epoch, CPU")
        ax.set_xlabel("wall seconds per epoch (median, whole process)")
        ax.set_ylabel("MAP (dashed: teacher, dotted: untrained)")
        ax.set_xlim(left=0)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def update_benchmarks_md(table: str, path: Path) -> None:
    block = f"{MARK_START}\n{table}\n{MARK_END}"
    text = path.read_text(encoding="utf-8") if path.exists() else f"# Benchmarks\n\n{MARK_START}\n{MARK_END}\n"
    if MARK_START in text and MARK_END in text:
        head, rest = text.split(MARK_START, 1)
        text = head + block + rest.split(MARK_END, 1)[1]
    else:
        text += "\n" + block + "\n"
    path.write_text(text, encoding="utf-8")


# ---------------------------------------------------------------------------------------------------------------


def subset(files: dict[str, str], directory: Path, train_groups: int, eval_groups: int) -> dict[str, str]:
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, path in files.items():
        keep = train_groups if split == "train" else eval_groups
        target = directory / f"{split}.jsonl"
        with open(path, encoding="utf-8") as f:
            lines = [line for line in f if line.strip()][:keep]
        target.write_text("".join(lines), encoding="utf-8")
        out[split] = str(target)
    return out


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] in ("_practice_reranker", "_practice_embedding"):
        (train_practice_reranker if sys.argv[1] == "_practice_reranker" else train_practice_embedding)(*sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="/tmp/hf_distill_benchmark")
    parser.add_argument("--cache_dir", default="/tmp/hf_distill_bench_cache", help="teacher-scored data")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pipelines", nargs="+", default=list(PIPELINES), choices=PIPELINES)
    parser.add_argument("--quick", action="store_true", help="smoke run: 48 train / 30 eval queries, 1 repeat")
    parser.add_argument(
        "--train_queries", type=int, default=None, help="train on the first N queries only (all 600 by default)"
    )
    parser.add_argument(
        "--merge_from", nargs="*", default=[], help="output dirs of other runs (e.g. one per pipeline) to report with"
    )
    parser.add_argument("--no_write", action="store_true", help="do not touch BENCHMARKS.md and the PNG")
    args = parser.parse_args()

    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    files = prepare_data(args.cache_dir)
    if args.quick:
        files = subset(files, output_dir / "quick_data", 48, 30)
        args.repeats = 1
    elif args.train_queries:
        train = subset({"train": files["train"]}, output_dir / "data", args.train_queries, 0)["train"]
        files = {**files, "train": train}
    results_path = output_dir / "results.json"
    results = load_json(results_path, None)
    if results is None or results.get("quick") != args.quick:
        results = {"runs": {}, "counts": {}, "metrics": {}, "references": {}, "quick": args.quick}
    results.update(
        date=time.strftime("%Y-%m-%d"),
        machine=(
            f"{os.cpu_count()} CPU cores, torch {__import__('torch').__version__}, CPU fp32, "
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
        ),
        repeats=args.repeats,
        train_groups=len(read_rows(files["train"])),
        eval_groups=len(read_rows(files["eval_in_domain"])),
    )

    if not results["references"]:
        print("[ref] teacher and untrained students", flush=True)
        results["references"] = {
            "teacher": teacher_metrics(files),
            "untrained_embedding": evaluate_embedding(untrained_embedding_student(), files),
            "untrained_reranker": untrained_reranker_metrics(files),
        }
        save_json(results_path, results)

    for repeat in range(args.repeats):
        order = args.pipelines[repeat % len(args.pipelines) :] + args.pipelines[: repeat % len(args.pipelines)]
        for pipeline in order:
            runs = results["runs"].setdefault(pipeline, [])
            if len(runs) > repeat:
                continue
            run_dir = output_dir / f"{pipeline}-r{repeat}"
            print(f"[run {repeat + 1}/{args.repeats}] {pipeline} ...", flush=True)
            command = command_for(pipeline, files["train"], str(run_dir))
            timing = run_timed(command, output_dir / f"{pipeline}-r{repeat}.log")
            print(f"    {timing['wall_s']:.1f} s, peak RSS {timing['peak_rss_mib']:.0f} MiB", flush=True)
            runs.append(timing)
            if pipeline not in results["metrics"]:
                model_dir = final_model_dir(pipeline, str(run_dir))
                evaluate = evaluate_reranker if pipeline_kind(pipeline) == "reranker" else evaluate_embedding
                results["metrics"][pipeline] = evaluate(model_dir, files)
                print(f"    {json.dumps(results['metrics'][pipeline])}", flush=True)
            save_json(results_path, results)

    for pipeline in args.pipelines:
        if pipeline not in results["counts"]:
            counted = (
                count_ours(pipeline, files["train"], str(output_dir / "count"))
                if pipeline in OURS
                else count_practice(pipeline_kind(pipeline), files["train"])
            )
            results["counts"][pipeline] = counted
            save_json(results_path, results)

    for other in args.merge_from:
        merged = load_json(Path(other) / "results.json", None)
        if merged is None:
            continue
        for key in ("runs", "counts", "metrics"):
            for pipeline, value in merged[key].items():
                results[key].setdefault(pipeline, value)
    summary = summarise(results)
    goal_rows = goals(summary, results["references"])
    table = markdown(results, summary, goal_rows)
    print(table)
    save_json(output_dir / "summary.json", {"summary": summary, "goals": goal_rows})
    if not args.no_write:
        write_chart(summary, results["references"], ROOT / "benchmarks" / "distillation_time_vs_map.png")
        update_benchmarks_md(table, ROOT / "BENCHMARKS.md")


if __name__ == "__main__":
    main()
