"""Cost as the work grows: the same pipelines at 100, 300, 600 and 1,200 train queries, one epoch each (#15 item 2).

Each size is one run of ``benchmarks/distillation_benchmark.py --length epoch`` (whole processes, pipelines
interleaved, the same data, student and settings as there; hf_distill's reranker with ``--min_train_steps 0`` so
that every pipeline trains exactly one epoch). Sizes up to the shipped 600 train queries take the first N of
``recipes/quickstart/data/train.jsonl``; a larger size builds its own quickstart data first
(``recipes/quickstart/build_data.py --num_train N --max_pages_per_tool 1000``: other eval queries, so its MAP is not comparable with the
smaller sizes' and is not reported) and has it scored by the same teacher.

Per pipeline, a least-squares line through (queries, median wall seconds) of the sizes on the shipped data gives
the **fixed cost** (the intercept: imports, data, model load, first-step warm-up, save, exit) and the **marginal
cost** (seconds per 100 train queries); the step to a larger size (rebuilt data) is reported on its own. Where the fixed cost of hf_distill's reranker goes, stage by stage, is ``benchmarks/fixed_cost.py``.

Writes ``<output_dir>/cost.json``, ``benchmarks/cost_vs_queries.png`` and the table between the
``<!-- cost-vs-queries:start -->`` / ``:end`` lines of ``BENCHMARKS.md`` (not with ``--no_write``).

Usage::

    python benchmarks/cost_vs_queries.py --output_dir /tmp/hf_distill_cost              # ~45 min on 2 CPU cores
    python benchmarks/cost_vs_queries.py --output_dir /tmp/hf_distill_cost --report     # table from finished runs
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import QUICKSTART, ROOT, load_json, read_rows, save_json, update_marked_section  # noqa: E402

SIZES = (100, 300, 600, 1200)
PIPELINES = ("hf_distill_reranker", "peer_listnet_reranker", "hf_distill_embedding", "peer_distillkl_embedding")
MARKED_SECTION = "cost-vs-queries"  # BENCHMARKS.md's <!-- cost-vs-queries:start/end --> lines
BENCHMARK = Path(__file__).resolve().parent / "distillation_benchmark.py"


def data_for(size: int, output_dir: Path, cache_dir: str) -> tuple[str, str]:
    """(data dir, teacher-score cache dir) holding at least ``size`` train queries."""
    if size <= len(read_rows(str(QUICKSTART / "train.jsonl"))):
        return str(QUICKSTART), cache_dir
    data_dir = output_dir / f"data_{size}"
    if not (data_dir / "train.jsonl").exists():
        print(f"[data] building {size} train queries -> {data_dir}", flush=True)
        command = [sys.executable, str(ROOT / "recipes" / "quickstart" / "build_data.py"), "--num_train", str(size)]
        # A Debian image has ~1,060 usable command pages at the default 100 per tool; 1,000 per tool lets more
        # templated gcloud pages in (mean passage 30.6 words against the shipped 31.9; train BM25 MAP 0.772 both).
        command += ["--max_pages_per_tool", "1000", "--output_dir", str(data_dir)]
        subprocess.run(command, check=True)
    return str(data_dir), str(output_dir / f"cache_{size}")


def run_size(size: int, args: argparse.Namespace) -> None:
    output_dir = Path(args.output_dir)
    data_dir, cache_dir = data_for(size, output_dir, args.cache_dir)
    command = [sys.executable, str(BENCHMARK), "--length", "epoch", "--no_write", "--train_queries", str(size)]
    command += ["--repeats", str(args.repeats), "--output_dir", str(output_dir / f"q{size}")]
    command += ["--data_dir", data_dir, "--cache_dir", cache_dir, "--pipelines", *args.pipelines]
    command += ["--flagembedding_skip_package_init"] if args.flagembedding_skip_package_init else []
    print(f"[size {size}] {' '.join(command)}", flush=True)
    subprocess.run(command, check=True)


def collect(args: argparse.Namespace) -> dict:
    """Median wall / CPU / peak RSS per (pipeline, size) from the finished runs, and the line through them."""
    output_dir = Path(args.output_dir)
    table: dict[str, dict] = {}
    for size in args.sizes:
        results = load_json(output_dir / f"q{size}" / "results.json", None)
        if not results:
            continue
        for pipeline in args.pipelines:
            runs = results["runs"].get(pipeline) or []
            if not runs:
                continue
            metrics = results["metrics"].get(pipeline) if size <= 600 else None
            table.setdefault(pipeline, {"sizes": {}})["sizes"][str(size)] = {
                "wall_s": statistics.median(r["wall_s"] for r in runs),
                "cpu_s": statistics.median(r["cpu_s"] for r in runs),
                "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in runs),
                "runs": len(runs),
                "map": {split: m["map"] for split, m in metrics.items()} if metrics else None,
            }
    shipped = len(read_rows(str(QUICKSTART / "train.jsonl")))
    for row in table.values():
        # The line is fitted on the sizes that share the shipped data; a larger size runs on rebuilt data (other
        # texts), so its step from the largest shipped size is reported on its own.
        points = [(int(q), v["wall_s"], v["cpu_s"]) for q, v in row["sizes"].items() if int(q) <= shipped]
        beyond = sorted((int(q), v["wall_s"]) for q, v in row["sizes"].items() if int(q) > shipped)
        if points and beyond:
            last_q, last_wall = max((q, w) for q, w, _ in points)
            row["wall_s_per_100_beyond"] = (beyond[-1][1] - last_wall) / (beyond[-1][0] - last_q) * 100
        if len(points) >= 2:
            row["fixed_wall_s"], row["wall_s_per_100"] = fit([(q, w) for q, w, _ in points])
            row["fixed_cpu_s"], row["cpu_s_per_100"] = fit([(q, c) for q, _, c in points])
    return table


def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares ``y = a + b * queries``; returns (a, b * 100)."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.mean(xs), statistics.mean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope * 100


def render(table: dict, sizes: list[int]) -> str:
    head = " | ".join(f"{q} q wall / CPU s" for q in sizes)
    lines = [
        f"| pipeline | {head} | fixed wall s | wall s per 100 q | fixed CPU s | CPU s per 100 q "
        "| wall s per 100 q, 600 -> 1200 (rebuilt data) | peak RSS MiB (largest) |",
        "|---|" + "---:|" * (len(sizes) + 6),
    ]
    for pipeline, row in table.items():
        cells = []
        for q in sizes:
            v = row["sizes"].get(str(q))
            cells.append(f"{v['wall_s']:.1f} / {v['cpu_s']:.0f}" if v else "-")
        largest = row["sizes"][max(row["sizes"], key=int)]["peak_rss_mib"]
        keys = ("fixed_wall_s", "wall_s_per_100", "fixed_cpu_s", "cpu_s_per_100", "wall_s_per_100_beyond")
        fixed = [row.get(k) for k in keys]
        fixed_cells = [f"{v:.1f}" if v is not None else "-" for v in fixed]
        lines.append(f"| {pipeline} | {' | '.join(cells)} | {' | '.join(fixed_cells)} | {largest:.0f} |")
    return "\n".join(lines)


def write_chart(table: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for pipeline, row in table.items():
        points = sorted((int(q), v["wall_s"]) for q, v in row["sizes"].items())
        style = "-o" if pipeline.startswith("hf_distill") else "--^"
        ax.plot([p[0] for p in points], [p[1] for p in points], style, label=pipeline)
    ax.set_xlabel("train queries (16 candidates each), 1 epoch")
    ax.set_ylabel("wall seconds (whole process, median)")
    ax.set_title("Cost as the work grows (2-layer MiniLM student, 2 CPU cores)")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="/tmp/hf_distill_cost")
    parser.add_argument("--cache_dir", default="/tmp/hf_distill_bench_cache", help="scores of the shipped data")
    parser.add_argument("--sizes", nargs="+", type=int, default=list(SIZES))
    parser.add_argument("--pipelines", nargs="+", default=list(PIPELINES))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--flagembedding_skip_package_init", action="store_true")
    parser.add_argument("--report", action="store_true", help="only read the finished runs and report")
    parser.add_argument("--no_write", action="store_true", help="do not touch BENCHMARKS.md and the PNG")
    args = parser.parse_args()
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    if not args.report:
        for size in args.sizes:
            run_size(size, args)
    table = collect(args)
    save_json(Path(args.output_dir) / "cost.json", table)
    markdown = render(table, args.sizes)
    print(markdown)
    print(json.dumps({p: {k: v for k, v in row.items() if k != "sizes"} for p, row in table.items()}, indent=2))
    if not args.no_write and table:
        write_chart(table, ROOT / "benchmarks" / "cost_vs_queries.png")
        update_marked_section(ROOT / "BENCHMARKS.md", MARKED_SECTION, markdown)


if __name__ == "__main__":
    main()
