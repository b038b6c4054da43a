"""Distil a teacher's scores into a cross-encoder reranker student.

Full fine-tuning on one GPU, or many (accelerate config decides):
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml recipes/reranker.py \
        --config recipes/bge-reranker-v2-m3/stackoverflowdupquestions/config_full.yaml

LoRA:
    accelerate launch recipes/reranker.py \
        --config recipes/bge-reranker-v2-m3/stackoverflowdupquestions/config_lora.yaml

Minimal (the defaults are the best setting we measured, see BENCHMARKS.md):
    python recipes/reranker.py --model_name_or_path BAAI/bge-reranker-v2-m3 \
        --train_file scores.jsonl --output_dir out/reranker

Every field of ScriptArguments (hf_distill.recipe), ModelArguments (hf_distill.model_loading) and DistillationArguments (hf_distill.trainer)
is a flag and a YAML key; flags override the YAML file. `--help` lists them.
"""

from hf_distill.cli import skip_final_garbage_collection
from hf_distill.recipe import run_distillation

if __name__ == "__main__":
    run_distillation("reranker")
    skip_final_garbage_collection()  # ~3.5 s of interpreter shutdown on 2 cores
