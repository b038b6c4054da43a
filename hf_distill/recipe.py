"""The body of ``recipes/reranker.py`` and ``recipes/embedding.py``: load data, student, train, save, push.

Kept here, not in the scripts, so both recipes (and the tests) share one tested path:

1. parse ``ScriptArguments``, ``ModelArguments`` and :class:`~hf_distill.trainer.DistillationArguments` from
   ``--config x.yaml`` plus CLI overrides;
2. read and validate every data file *before* anything is written (a bad file costs nothing);
3. load the student (:mod:`hf_distill.model_loading`: a fresh ``num_labels=1`` head for a reranker checkpoint
   that has none; optionally only its first N layers; optionally LoRA);
4. train (``--resume_from_checkpoint`` supported; the Trainer's first evaluation gives the "before" metrics);
5. save a plain checkpoint (LoRA merged), then evaluate it, write the report and a model card, push if asked.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from transformers import HfArgumentParser, set_seed

from .cli import choose_num_threads, exit_on_user_error, launcher_of_parent, parse_config
from .data import eval_set_names, groups_to_dataset, load_ranking_dataset, read_groups
from .errors import ConfigError
from .hub import push_student
from .kinds import Task, check_task
from .model_card import write_model_card
from .model_loading import ModelArguments, load_student, save_student, wrap_lora
from .reports import DistillationReport
from .trainer import DistillationArguments, EmbeddingDistillationTrainer, RerankerDistillationTrainer

logger = logging.getLogger("hf_distill")


@dataclass
class ScriptArguments:
    """Data and bookkeeping of a distillation run."""

    train_file: str = field(
        default=None,
        metadata={
            "help": "Teacher-scored training data: a file (jsonl/json/parquet), a saved dataset dir or a Hub name."
        },
    )
    train_format: str = field(
        default="auto", metadata={"help": "listwise, pointwise, pairwise, flagembedding or auto (detected)."}
    )
    eval_file: list[str] | None = field(
        default=None,
        metadata={
            "help": "One or more eval files (teacher-scored, or labels only such as MTEB test rows). Each "
            "set is named after its file stem; files that share a stem are named <parent folder>_<stem> "
            "(data/scidocs/test_scored.jsonl -> scidocs_test_scored); name=path names one explicitly. "
            "Metrics are prefixed with the name."
        },
    )
    max_train_groups: int | None = field(
        default=None, metadata={"help": "Keep only the first N training queries (quick runs)."}
    )
    evaluate_before_training: bool = field(
        default=True, metadata={"help": "Evaluate the untrained student too, for the before/after table and card."}
    )
    teacher_model_name_or_path: str | None = field(
        default=None, metadata={"help": "The teacher that scored the data (written into the model card)."}
    )
    dataset_name: str | None = field(
        default=None, metadata={"help": "Name of the training data for the model card (default: train_file)."}
    )
    num_threads: int | None = field(
        default=None,
        metadata={
            "help": "torch threads per process (default on CPU: the cores this process may use / the processes on "
            "this node, unless OMP_NUM_THREADS or HF_DISTILL_NUM_THREADS is yours; on GPU: torch's own). "
            "accelerate launch's own OMP_NUM_THREADS=1 does not count as yours."
        },
    )


def _evaluate_all(trainer, eval_datasets: dict[str, Any]) -> dict[str, dict[str, float]]:
    return {
        name: {k.removeprefix(f"{name}_"): v for k, v in trainer.evaluate(ds, metric_key_prefix=name).items()}
        for name, ds in eval_datasets.items()
    }


def _first_evaluation(log_history: list[dict[str, Any]], names: list[str]) -> dict[str, dict[str, float]]:
    """The metrics of the Trainer's first evaluation of each eval set (``eval_on_start``: the untrained student)."""
    first: dict[str, dict[str, float]] = {}
    for name in names:
        prefix = f"eval_{name}_"
        for entry in log_history:
            if f"{prefix}map" in entry:
                first[name] = {k.removeprefix(prefix): v for k, v in entry.items() if k.startswith(prefix)}
                break
    return first


def _has_accelerator() -> bool:
    return (
        torch.cuda.is_available()
        or (hasattr(torch, "xpu") and torch.xpu.is_available())
        or (hasattr(torch.backends, "mps") and torch.backends.mps.is_available())
    )


def _available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def set_num_threads(num_threads: int | None = None) -> int:
    """Choose the torch thread count of this process (:func:`hf_distill.cli.choose_num_threads`), apply it, log
    one line saying what and why; returns the count before, to restore."""
    previous = torch.get_num_threads()
    chosen, reason = choose_num_threads(
        os.environ,
        _available_cores(),
        num_threads=num_threads,
        has_accelerator=_has_accelerator(),
        launcher=launcher_of_parent() if os.environ.get("OMP_NUM_THREADS") else None,
    )
    if chosen is not None and chosen != previous:
        torch.set_num_threads(chosen)
    logger.info("torch threads: %d (%s)", torch.get_num_threads(), reason)
    return previous


def _cpu_worker_flags() -> list[str]:
    """Flags that make a recipe run on a machine without GPUs: one process, or several training together over gloo.

    ``accelerate launch --multi_gpu --num_processes N`` (or ``accelerate_configs/multi_cpu.yaml``) and the
    DeepSpeed configs start N processes, but on CPU accelerate forms no process group by itself: DDP workers would
    each train alone on the full data (it needs ``use_cpu``; in accelerate 1.x ``--cpu`` cannot be combined with
    ``--multi_gpu``), and DeepSpeed would see N ranks while the Trainer counts one (it needs a named backend).
    They go first on the command line, so a user's own ``--use_cpu`` / ``--ddp_backend`` still wins.
    """
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if _has_accelerator():
        return []
    if not launched:
        # One process on a machine without GPUs: a GPU config (bf16: true) runs on the CPU as it is, in CPU bf16.
        return ["--use_cpu", "true"]
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        return ["--ddp_backend", "gloo", "--use_cpu", "true"]
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        return []
    return ["--use_cpu", "true"]


@exit_on_user_error
def run_distillation(task: Task, argv: list[str] | None = None) -> dict[str, Any]:
    """Parse the command line and run one distillation; returns its report (:meth:`DistillationReport.to_dict`, the
    content of ``distillation_report.json``), before/after metrics included."""
    argv = list(sys.argv[1:] if argv is None else argv)
    check_task(task)
    parser = HfArgumentParser((ScriptArguments, ModelArguments, DistillationArguments))
    script_args, model_args, training_args = parse_config(parser, _cpu_worker_flags() + argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if not script_args.train_file:
        raise ConfigError("--train_file is required: teacher-scored data (run recipes/score_teacher.py to make it).")
    try:  # option values the trainer would only check after the data and the student are loaded
        training_args.dropout_probability()
        training_args.loss_options()
        training_args.min_train_steps_for(fresh_head=False)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    threads_before = set_num_threads(script_args.num_threads)
    try:
        return _run(task, argv, script_args, model_args, training_args)
    finally:  # a run inside a longer process (a notebook, the tests) leaves torch as it found it
        torch.set_num_threads(threads_before)


def _run(task: Task, argv: list[str], script_args, model_args, training_args) -> dict[str, Any]:

    # Every data file is read and validated before anything is written. The main process streams the training
    # file into an Arrow cache first; the other processes then map the same file instead of reading it again.
    eval_files = eval_set_names(script_args.eval_file or [])
    with training_args.main_process_first(desc="reading the training data"):
        train_dataset = load_ranking_dataset(script_args.train_file, format=script_args.train_format)
    if script_args.max_train_groups is not None:
        train_dataset = train_dataset.select(range(min(script_args.max_train_groups, len(train_dataset))))
    eval_datasets = {name: load_eval_dataset(path) for name, path in eval_files.items()}

    set_seed(training_args.seed)  # a fresh reranker head is drawn at load: the same head for the same --seed
    model, tokenizer = load_student(task, model_args, training_args.student_type)
    if model_args.use_peft:
        model = wrap_lora(task, model, model_args)

    # The "before" metrics come from the Trainer's own evaluation at step 0, inside train(): evaluating before
    # train() would prepare a DeepSpeed engine without its optimizer. A resumed run has no untrained student.
    if script_args.evaluate_before_training and eval_datasets and not training_args.resume_from_checkpoint:
        training_args.eval_on_start = True
    # Our own push (of the merged student with its card) replaces the Trainer's push at every save.
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False
    trainer_cls = RerankerDistillationTrainer if task == "reranker" else EmbeddingDistillationTrainer
    trainer = trainer_cls(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_datasets or None,
        processing_class=tokenizer,
    )
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    before = _first_evaluation(trainer.state.log_history, list(eval_datasets)) if training_args.eval_on_start else {}

    # Saved first: whatever the final evaluation does (run out of memory, meet a NaN), the student is on disk.
    output_dir = training_args.output_dir
    save_student(task, trainer, tokenizer, model_args, output_dir)
    evaluation_error = None
    try:
        after = _evaluate_all(trainer, eval_datasets)
    except Exception as error:  # reported below, with the student already saved
        after, evaluation_error = {}, error
        logger.error(
            "the final evaluation failed (%s: %s). The trained student is saved in %s: evaluate it with "
            "recipes/evaluate.py --model_name_or_path %s.",
            type(error).__name__,
            error,
            output_dir,
            output_dir,
        )
        if training_args.world_size > 1:
            raise  # the other processes may be inside the evaluation's collectives: waiting for them would hang
    report = DistillationReport(
        student_kind=task,
        base_model=model_args.model_name_or_path,
        num_hidden_layers=model_args.num_hidden_layers,
        teacher=script_args.teacher_model_name_or_path,
        train_data=script_args.dataset_name or script_args.train_file,
        loss=training_args.loss,
        # As used: "auto" temperatures resolved by the trainer (from the training scores / the student type).
        loss_options=dict(getattr(trainer.loss_fn, "options", None) or training_args.loss_options()),
        hard_label_weight=training_args.hard_label_weight,
        group_size=training_args.group_size,
        learning_rate=training_args.learning_rate,
        num_train_epochs=training_args.num_train_epochs,
        max_steps=training_args.max_steps,
        train_runtime_s=train_result.metrics.get("train_runtime"),
        world_size=training_args.world_size,
        distributed_type=trainer.accelerator.distributed_type.value,  # NO, MULTI_GPU, MULTI_CPU, DEEPSPEED, FSDP
        dropout=training_args.dropout,
        precision=str(trainer.accelerator.mixed_precision),  # no, bf16 or fp16: what the forward ran in
        instruction=training_args.instruction,
        query_prefix=training_args.query_prefix or None,
        eval_files=eval_files,
        metrics_before=before,
        metrics_after=after,
        command=" ".join(shlex.quote(a) for a in [os.path.basename(sys.argv[0]), *argv]),
        lora=asdict(model_args) if model_args.use_peft else None,
        evaluation_error=None if evaluation_error is None else f"{type(evaluation_error).__name__}: {evaluation_error}",
    )
    if trainer.args.should_save:
        report.save(output_dir)
        if push_to_hub and evaluation_error is not None:
            logger.error("not pushed to the Hub: the final evaluation failed (the card would have no results)")
        write_card_and_push(output_dir, report, push_to_hub and evaluation_error is None, training_args)
    # No rank exits while the main process still writes: a launcher stops every rank when one ends badly.
    trainer.accelerator.wait_for_everyone()
    _release_training_state(trainer)
    if evaluation_error is not None:
        raise evaluation_error
    return report.to_dict()


def load_eval_dataset(path: str):
    """An eval set: teacher-scored rows, or labels only (e.g. MTEB test rows), which then have no ``scores``
    column: the student and the base are measured on the labels, without a teacher row or agreement."""
    groups = read_groups(path, require_scores=False)
    dataset = groups_to_dataset(groups)
    unscored = sum(group.scores is None for group in groups)
    if unscored:
        log = logger.info if unscored == len(groups) else logger.warning
        log(
            "%s: %d of %d queries have no teacher scores: the set is measured on its labels, without teacher "
            "metrics and agreement",
            path,
            unscored,
            len(groups),
        )
        dataset = dataset.remove_columns("scores")
    return dataset


def _release_training_state(trainer) -> None:
    """Free the (DeepSpeed-owned) weights and close the process group before the interpreter exits.

    Left to interpreter shutdown, a gloo worker thread can still be releasing DeepSpeed parameter tensors after
    Python has finalised, and the process aborts ("terminate called without an active exception") although all
    work is done. Tearing down in order, while Python is alive, avoids it.
    """
    import gc

    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    trainer.accelerator.free_memory()
    for name in ("model", "model_wrapped", "deepspeed", "optimizer", "lr_scheduler"):
        if hasattr(trainer, name):
            setattr(trainer, name, None)
    if distributed or getattr(trainer, "is_deepspeed_enabled", False):
        # A full collection walks every object of torch & co. (~0.7 s on 2 busy cores): only where it matters.
        gc.collect()
    if distributed and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def write_card_and_push(
    output_dir: str, report: DistillationReport, push_to_hub: bool, training_args: DistillationArguments
) -> None:
    """Write the model card of the student saved in ``output_dir``; then, when ``push_to_hub``, push the folder to
    ``training_args.hub_model_id`` (with ``hub_token`` and ``hub_private_repo``), the card loading that repo.

    Raises:
        ConfigError: ``push_to_hub`` without a ``hub_model_id`` (the card is written first).
        HubPushError: the push failed; the local folder is unchanged.
    """
    write_model_card(output_dir, report, repo_id=training_args.hub_model_id if push_to_hub else None)
    if push_to_hub:
        if not training_args.hub_model_id:
            raise ConfigError("--push_to_hub needs --hub_model_id <user>/<name>.")
        push_student(
            output_dir,
            training_args.hub_model_id,
            token=training_args.hub_token,
            private=training_args.hub_private_repo,
        )
