"""Why a fresh one-logit head on a mean-pooling checkpoint does not learn in a short run (#15 item 4): probes.

Two parts, on the benchmark's data and student (the quickstart set scored by the full all-MiniLM-L6-v2;
all-MiniLM-L6-v2 cut to 2 layers, a fresh ``BertForSequenceClassification`` head):

* ``diagnose``: how much the states the head reads vary across one query's 16 candidates (per-feature standard
  deviation, averaged over features and 16 training queries): the last layer's [CLS], its mean over tokens, the
  pooler's output, the logit, and the teacher's scores. ``--zero_last_query`` first zeroes the last layer's query
  projection, so that [CLS] attends uniformly to every token in that layer (the other positions' last-layer
  outputs never reach a sequence-classification score, so this only changes what [CLS] reads).
* ``train``: ``recipes/reranker.py``'s own run (``hf_distill.recipe.run_distillation``, 1 epoch, which the
  recipe's ``min_train_steps`` default now lengthens to 100 steps below 800 queries; the table in BENCHMARKS.md ran
  the old defaults: ``"flags": ["--min_train_steps", "0", "--train_sampling_strategy", "group_by_length"]``; the
  benchmark's flags plus ``--seed``) with one change from ``--variant`` (JSON), then MAP on both eval splits; one JSON line per
  run is appended to ``--results``. Variant keys (combine freely):
  ``head_std`` (re-draw the classifier weight with this std), ``head_lr_mult`` + ``head_names`` (a larger learning
  rate for parameters whose name contains one of the names; default classifier and pooler), ``zero_last_query``,
  ``align`` (weight of an extra loss ``1 - cos([CLS], mean-pooled state)`` of the last layer), ``auxhead``
  (weight of the same listwise loss on the pooler + classifier applied to the mean-pooled state), ``flags``
  (extra recipe flags, e.g. ``["--learning_rate", "1e-3"]``).

Usage::

    python benchmarks/fresh_head_probe.py diagnose [--zero_last_query]
    python benchmarks/fresh_head_probe.py train --train_queries 200 --seeds 1 --variant '{"name": "base"}'
    python benchmarks/fresh_head_probe.py train --train_queries 200 --seeds 1 --variant '{"name": "std1", "head_std": 1.0}'
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from common import (
    MAX_LENGTH,
    STUDENT_LAYERS,
    evaluate_reranker,
    fresh_reranker,
    minilm_path,
    prepare_data,
    read_rows,
)  # noqa: E402


def zero_last_query(model) -> None:
    query = model.base_model.encoder.layer[-1].attention.self.query
    with torch.no_grad():
        query.weight.zero_()
        query.bias.zero_()


@torch.no_grad()
def diagnose(files: dict[str, str], zero_query: bool) -> dict[str, float]:
    from transformers import AutoTokenizer

    model = fresh_reranker(42).eval()
    if zero_query:
        zero_last_query(model)
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    spread: dict[str, list[float]] = {"cls": [], "mean": [], "pooler": [], "logit": [], "teacher": []}
    for row in read_rows(files["train"])[:16]:
        enc = tokenizer(
            [row["query"]] * len(row["passages"]),
            row["passages"],
            truncation=True,
            max_length=MAX_LENGTH,
            padding=True,
            return_tensors="pt",
        )
        out = model.base_model(**enc)
        hidden = out.last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        spread["cls"].append(hidden[:, 0].std(0).mean().item())
        spread["mean"].append(((hidden * mask).sum(1) / mask.sum(1)).std(0).mean().item())
        spread["pooler"].append(out.pooler_output.std(0).mean().item())
        spread["logit"].append(model(**enc).logits.view(-1).std().item())
        spread["teacher"].append(torch.tensor(row["scores"]).std().item())
    return {name: statistics.mean(values) for name, values in spread.items()}


def patch_for(variant: dict, seed: int) -> None:
    """Install the variant's change into the recipe's student loading, optimizer and loss."""
    import transformers

    import hf_distill.recipe as recipe
    import hf_distill.students as students
    import hf_distill.trainer as trainer_module

    load = recipe.load_student

    def load_student(task, model_args, student_type="auto"):
        model, tokenizer = load(task, model_args, student_type)
        if "head_std" in variant:
            generator = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                head = model.classifier
                head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * variant["head_std"])
                head.bias.zero_()
        if variant.get("zero_last_query"):
            zero_last_query(model)
        return model, tokenizer

    recipe.load_student = load_student

    if variant.get("head_lr_mult"):
        create = transformers.Trainer.create_optimizer

        def create_optimizer(self, *args, **kwargs):
            optimizer = create(self, *args, **kwargs)
            names = {id(p): n for n, p in self.model.named_parameters()}
            wanted = variant.get("head_names", ["classifier", "pooler"])
            extra = []
            for group in optimizer.param_groups:
                head = [p for p in group["params"] if any(w in names[id(p)] for w in wanted)]
                group["params"] = [p for p in group["params"] if all(p is not h for h in head)]
                if head:
                    settings = {k: v for k, v in group.items() if k != "params"}
                    extra.append({**settings, "params": head, "lr": group["lr"] * variant["head_lr_mult"]})
            for group in extra:
                optimizer.add_param_group(group)
            return optimizer

        transformers.Trainer.create_optimizer = create_optimizer

    if variant.get("align") or variant.get("auxhead"):
        extra_terms: list[tuple[str, torch.Tensor]] = []

        def score_pairs(self, model, features):
            out = model(**features, output_hidden_states=True)
            if model.training:
                hidden = out.hidden_states[-1]
                mask = features["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                mean = (hidden * mask).sum(1) / mask.sum(1)
                if variant.get("align"):
                    cos = torch.nn.functional.cosine_similarity(hidden[:, 0], mean.detach(), dim=-1)
                    extra_terms.append(("align", (1 - cos).mean()))
                if variant.get("auxhead"):
                    base = getattr(model, "module", model)
                    pooler = base.base_model.pooler
                    extra_terms.append(("aux", base.classifier(pooler.activation(pooler.dense(mean))).view(-1)))
            return out.logits.view(-1)

        students.CrossEncoderScorer.score_pairs = score_pairs
        compute = trainer_module.DistillationTrainer.compute_loss

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            extra_terms.clear()
            result = compute(self, model, inputs, return_outputs, num_items_in_batch)
            if not model.training or not extra_terms:
                return result
            loss = result[0] if return_outputs else result
            aligns = [v for k, v in extra_terms if k == "align"]
            if aligns:
                loss = loss + variant["align"] * torch.stack(aligns).mean()
            aux = [v for k, v in extra_terms if k == "aux"]
            if aux:
                scores = students._scatter_to_groups(
                    torch.cat([a.float() for a in aux]), inputs["pair_index"], inputs["candidate_mask"]
                )
                aux_loss = self.loss_fn(
                    scores, inputs["teacher_scores"], inputs["candidate_mask"], inputs["relevance_labels"]
                )
                loss = loss + variant["auxhead"] * aux_loss
            return (loss, result[1]) if return_outputs else loss

        trainer_module.DistillationTrainer.compute_loss = compute_loss


def train_once(files: dict[str, str], train_file: str, seed: int, variant: dict, output_dir: str) -> dict:
    from hf_distill.recipe import run_distillation

    patch_for(variant, seed)
    argv = [
        *("--model_name_or_path", minilm_path(), "--num_hidden_layers", str(STUDENT_LAYERS)),
        *("--train_file", train_file, "--output_dir", output_dir, "--max_length", str(MAX_LENGTH)),
        *("--num_train_epochs", "1", "--eval_strategy", "no", "--save_strategy", "no", "--report_to", "none"),
        *("--disable_tqdm", "true", "--logging_steps", "5", "--seed", str(seed)),
        *variant.get("flags", []),
    ]
    start = time.perf_counter()
    run_distillation("reranker", argv)
    wall = time.perf_counter() - start
    metrics = evaluate_reranker(output_dir, files)
    return {
        "variant": variant,
        "seed": seed,
        "train_queries": len(read_rows(train_file)),
        "wall_s": wall,
        "map_in": metrics["eval_in_domain"]["map"],
        "map_ood": metrics["eval_out_of_domain"]["map"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("diagnose", "train"))
    parser.add_argument("--cache_dir", default="/tmp/hf_distill_bench_cache")
    parser.add_argument("--zero_last_query", action="store_true")
    parser.add_argument("--train_queries", type=int, default=200)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--variant", default='{"name": "base"}', help="JSON; see the module docstring")
    parser.add_argument("--results", default="/tmp/hf_distill_fresh_head.jsonl")
    args = parser.parse_args()
    files = prepare_data(args.cache_dir)
    if args.mode == "diagnose":
        print(json.dumps(diagnose(files, args.zero_last_query), indent=2))
        return
    if len(args.seeds) > 1:
        parser.error("one seed per process (the variants patch the recipe in place): loop over seeds in the shell")
    with tempfile.TemporaryDirectory() as tmp:
        train_file = str(Path(tmp) / "train.jsonl")
        rows = Path(files["train"]).read_text(encoding="utf-8").splitlines(keepends=True)[: args.train_queries]
        Path(train_file).write_text("".join(rows), encoding="utf-8")
        record = train_once(files, train_file, args.seeds[0], json.loads(args.variant), str(Path(tmp) / "out"))
    with open(args.results, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    print("RESULT", json.dumps(record))


if __name__ == "__main__":
    main()
