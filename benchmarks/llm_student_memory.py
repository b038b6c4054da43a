"""Memory and time of a causal-LM yes/no student step: full-vocabulary logits vs the last position only.

A Qwen3-Reranker student's score is ``z_yes - z_no`` at the prompt's last position. Three ways to get it:

* ``full``: ``model(**batch).logits[:, -1, [yes, no]]``, the plain call. The LM head runs at every position and
  returns ``[P, L, vocab]`` logits (151,669 columns for Qwen3), whose gradient is as big again in training.
* ``last`` (what :class:`hf_distill.students.CausalYesNoScorer` does): ``model(**batch, logits_to_keep=1)``. The
  head runs on the last position only: ``[P, 1, vocab]`` logits, through the model's own forward, so PEFT, DDP
  and DeepSpeed ZeRO-3 (which gathers ``lm_head`` in that forward) work unchanged.
* ``two_rows``: the decoder's last hidden state times the two ``lm_head`` rows, ``[P, 2]``. The least memory, but
  it reads ``lm_head.weight`` outside the head's forward: under ZeRO-3 that is an empty shard, and under PEFT
  the decoder must be reached through the wrapper. Shown here only as the lower bound.

The model is a randomly initialised Qwen3 with the real Qwen3 vocabulary size (151,669) and tied embeddings
(as Qwen3-0.6B), hidden 256 and 4 layers: small enough for a CPU, big enough that the ``[tokens x vocab]``
logits show. Each mode runs in a fresh process; "peak" is the growth of that process's peak memory over the
memory held before the step (CPU: ``VmHWM`` from ``/proc``, reset through ``clear_refs``; GPU:
``torch.cuda.max_memory_allocated``), "step" the fastest step's wall time. Training = forward + backward (no optimiser
step, which is the same for all modes).

Usage::

    python benchmarks/llm_student_memory.py                      # 16 prompts x 128 tokens, CPU
    python benchmarks/llm_student_memory.py --frozen_embeddings  # embeddings and LM head frozen, as under LoRA
    python benchmarks/llm_student_memory.py --prompts 64 --length 256 --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

MODES = ("full", "last", "two_rows")
QWEN3_VOCAB_SIZE = 151_669
YES, NO = 9693, 2152  # any two ids: the weights are random


def build_model(args: argparse.Namespace) -> torch.nn.Module:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=args.vocab_size,
        hidden_size=args.hidden_size,
        intermediate_size=3 * args.hidden_size,
        num_hidden_layers=args.layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=args.hidden_size // 4,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(config).to(device=args.device, dtype=getattr(torch, args.dtype))
    if args.frozen_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)  # tied: the LM head too, as under LoRA
    if args.activation_checkpointing:
        model.activation_checkpointing_enable()
    return model


def answer_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor], mode: str) -> torch.Tensor:
    """``[P, 2]`` logits of the yes/no tokens at the last position, computed the ``mode`` way."""
    if mode == "full":
        return model(**batch, use_cache=False).logits[:, -1, [YES, NO]]
    if mode == "last":
        return model(**batch, logits_to_keep=1, use_cache=False).logits[:, -1, [YES, NO]]
    hidden = model.model(**batch, use_cache=False).last_hidden_state[:, -1]
    return hidden @ model.lm_head.weight[[YES, NO]].T


class PeakMemory:
    """Peak bytes allocated above the level at ``reset()``: CUDA allocator stats, or the process's peak RSS."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")

    @staticmethod
    def _status(key: str) -> int:
        with open("/proc/self/status") as f:
            line = next(line for line in f if line.startswith(key + ":"))
        return int(line.split()[1]) * 1024

    def reset(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM (peak RSS) to the current RSS
            self.base = self._status("VmRSS")

    def peak(self) -> int:
        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() - self.base
        return self._status("VmHWM") - self.base


def measure(args: argparse.Namespace, mode: str) -> dict:
    torch.set_num_threads(args.threads)
    model = build_model(args)
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(0, args.vocab_size, (args.prompts, args.length), generator=generator)
    batch = {
        "input_ids": input_ids.to(args.device),
        "attention_mask": torch.ones_like(input_ids, device=args.device),
    }
    memory = PeakMemory(args.device)
    result = {"mode": mode}
    for phase in ("inference", "training"):
        training = phase == "training"
        model.train(training)
        peaks, times = [], []
        for _ in range(args.steps + 1):  # the first step warms up kernels and the allocator
            model.zero_grad(set_to_none=True)
            memory.reset()
            start = time.perf_counter()
            with torch.set_grad_enabled(training):
                logits = answer_logits(model, batch, mode).float()
                scores = logits[:, 0] - logits[:, 1]
                if training:
                    scores.square().mean().backward()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
            peaks.append(memory.peak())
            del logits, scores
        result[f"{phase}_peak_mb"] = round(max(peaks[1:]) / 2**20, 1)
        # The fastest step: the machine may be shared, and the minimum is the least disturbed run.
        result[f"{phase}_step_ms"] = round(1000 * min(times[1:]), 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=16, help="prompts per micro-batch (P)")
    parser.add_argument("--length", type=int, default=128, help="tokens per prompt (L)")
    parser.add_argument("--vocab_size", type=int, default=QWEN3_VOCAB_SIZE)
    parser.add_argument("--hidden_size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per phase, after one warm-up step")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument(
        "--frozen_embeddings", action="store_true", help="freeze the (tied) embeddings and LM head, as LoRA does"
    )
    parser.add_argument("--activation_checkpointing", action="store_true", help="recompute layers in the backward")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args, args.child)))
        return

    tokens = args.prompts * args.length
    bytes_per_value = torch.finfo(getattr(torch, args.dtype)).bits // 8
    model = build_model(args)
    params = sum(p.numel() for p in model.parameters())
    del model
    print(
        f"Qwen3 (random weights): hidden {args.hidden_size}, {args.layers} layers, vocab {args.vocab_size:,}, "
        f"{params / 1e6:.1f}M parameters, {args.dtype} on {args.device}; micro-batch {args.prompts} prompts x "
        f"{args.length} tokens = {tokens:,} tokens; embeddings and LM head "
        f"{'frozen (as under LoRA)' if args.frozen_embeddings else 'trained'}; activation checkpointing "
        f"{'on' if args.activation_checkpointing else 'off'}"
    )
    print(
        f"full-vocabulary logits at every position: {tokens:,} x {args.vocab_size:,} x {bytes_per_value} B = "
        f"{tokens * args.vocab_size * bytes_per_value / 2**20:,.0f} MiB (and as much again for their gradient); "
        f"last position only: {args.prompts * args.vocab_size * bytes_per_value / 2**20:,.1f} MiB\n"
    )
    argv = [a for a in sys.argv[1:] if a not in ("--modes", *MODES)]
    rows = []
    for mode in args.modes:
        # Every allocation of 64 KiB or more is its own mapping, unmapped when freed, so the process's RSS follows
        # the live tensors (glibc otherwise keeps freed blocks for reuse, hiding later steps' peaks).
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MALLOC_MMAP_THRESHOLD_": "65536"}
        output = subprocess.run(
            [sys.executable, __file__, *argv, "--child", mode], capture_output=True, text=True, env=env, check=True
        ).stdout
        rows.append(json.loads(output.strip().splitlines()[-1]))
    header = f"{'mode':<10}{'train peak MiB':>16}{'train step ms':>15}{'infer peak MiB':>16}{'infer step ms':>15}"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['mode']:<10}{row['training_peak_mb']:>16,.1f}{row['training_step_ms']:>15,.1f}"
            f"{row['inference_peak_mb']:>16,.1f}{row['inference_step_ms']:>15,.1f}"
        )


if __name__ == "__main__":
    main()
