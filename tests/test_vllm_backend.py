"""The vLLM teacher backend, without vLLM: a fake ``vllm`` module runs the tiny HF model and enforces vLLM's rules.

The fake follows vLLM's own code, so a test fails where real vLLM would:

* prompt length (``vllm/v1/engine/input_processor.py``, ``_validate_prompt_len``): an empty prompt or one longer
  than ``max_model_len`` is refused, and on the generate runner one of exactly ``max_model_len`` tokens too (no room
  for the one output token); the pooling runner accepts ``==``;
* the pooling runner for the original Qwen3-Reranker (``hf_overrides`` with ``classifier_from_token`` and
  ``is_original_qwen3_reranker``): one score row ``w[tokens[1]] - w[tokens[0]]`` of the lm_head, in fp32
  (``vllm/model_executor/models/adapters.py``, ``load_weights_using_from_2_way_softmax``), applied to the last
  token's final hidden state, with a sigmoid unless ``PoolingParams(use_activation=False)``
  (``activation=False`` on vLLM 0.10.x);
* the generate runner: top-k logprobs the way vLLM's sampler returns them (``processed_logprobs``: after the
  allowed-token mask; raw: the full distribution, plus the sampled token);
* ``LLM(**kwargs)``: an argument that is not an engine argument of that vLLM is a ``TypeError``, as in
  ``EngineArgs(**kwargs)``; the engine sees the ``CUDA_VISIBLE_DEVICES`` of the moment it is built.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch

from hf_distill.errors import ConfigError, TeacherConfigError
from hf_distill.teachers import load_teacher, score_groups

from conftest import small_groups

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: small matmuls run fastest on one thread

# What LLM() takes besides EngineArgs' fields in every vLLM this backend supports.
_COMMON_ENGINE_ARGS = (
    "model",
    "tokenizer",
    "dtype",
    "trust_remote_code",
    "gpu_memory_utilization",
    "tensor_parallel_size",
    "max_model_len",
    "enable_prefix_caching",
    "enforce_eager",
    "max_num_batched_tokens",
    "max_num_seqs",
    "hf_overrides",
)


def fake_vllm(
    model_path: str, *, runner: bool = True, activation_field: str | None = "use_activation", logprobs_mode: bool = True
):
    """A stand-in for the ``vllm`` module backed by the HF checkpoint at ``model_path``.

    ``runner=False`` and ``logprobs_mode=False`` make it an older vLLM without those engine arguments;
    ``activation_field`` is the ``PoolingParams`` field that switches the classifier's activation
    (``use_activation`` from 0.11.1, ``activation`` in 0.10.x).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf_model = AutoModelForCausalLM.from_pretrained(model_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    fields = list(_COMMON_ENGINE_ARGS) + ["runner"] * runner + ["logprobs_mode"] * logprobs_mode
    EngineArgs = dataclasses.make_dataclass("EngineArgs", [(name, Any, None) for name in fields])

    class SamplingParams:
        def __init__(self, **kwargs):
            self.__dict__.update(kwargs)

    class PoolingParams:
        def __init__(self, **kwargs):
            known = {"task", "truncate_prompt_tokens", "dimensions"} | ({activation_field} - {None})
            unknown = sorted(set(kwargs) - known)
            if unknown:  # msgspec.Struct's error for an unknown field
                raise TypeError(f"Unexpected keyword argument {unknown[0]!r}")
            self.activation = kwargs.get(activation_field)

    class LLM:
        instances: list = []

        def __init__(self, **kwargs):
            unknown = sorted(set(kwargs) - set(fields))
            if unknown:
                raise TypeError(f"EngineArgs.__init__() got an unexpected keyword argument {unknown[0]!r}")
            self.kwargs = kwargs
            self.visible_devices = os.environ.get("CUDA_VISIBLE_DEVICES")
            self.runner_type = "pooling" if kwargs.get("runner") == "pooling" else "generate"
            self.max_model_len = kwargs.get("max_model_len") or hf_model.config.max_position_embeddings
            self.calls: list[list[list[int]]] = []
            if self.runner_type == "pooling":
                overrides = kwargs.get("hf_overrides") or {}
                assert overrides.get("architectures") == ["Qwen3ForSequenceClassification"], overrides
                assert overrides.get("is_original_qwen3_reranker") is True, overrides
                tokens = overrides["classifier_from_token"]
                assert len(tokens) == 2, "Try loading the original Qwen3 Reranker?"
                # load_weights_using_from_2_way_softmax: false_id = tokens[0], true_id = tokens[1].
                false_id, true_id = (tokenizer.convert_tokens_to_ids(t) for t in tokens)
                weight = hf_model.get_output_embeddings().weight.detach()
                self.score_weight = weight[true_id].float() - weight[false_id].float()
            LLM.instances.append(self)

        def _validate_prompt_len(self, prompt_len: int) -> None:
            if prompt_len == 0:
                raise ValueError("The decoder prompt cannot be empty")
            if prompt_len > self.max_model_len:
                raise ValueError(
                    f"The decoder prompt (length {prompt_len}) is longer than the maximum model length of "
                    f"{self.max_model_len}. Make sure that `max_model_len` is no smaller than the number of text tokens."
                )
            if prompt_len == self.max_model_len and self.runner_type == "generate":
                raise ValueError(
                    f"The decoder prompt (length {prompt_len}) plus the number of requested output tokens (at least "
                    f"1) is longer than the maximum model length of {self.max_model_len}. Make sure that "
                    "`max_model_len` is no smaller than the number of text tokens (prompt + requested output tokens)."
                )

        def _add_requests(self, prompts) -> list[list[int]]:
            ids = [prompt["prompt_token_ids"] for prompt in prompts]
            for prompt_ids in ids:  # one bad prompt fails the whole call, before anything runs
                self._validate_prompt_len(len(prompt_ids))
            self.calls.append(ids)
            return ids

        def generate(self, prompts, sampling_params, use_tqdm=True):
            if self.runner_type != "generate":
                raise ValueError("This model does not support generation")
            params = sampling_params
            outputs = []
            for ids in self._add_requests(prompts):
                with torch.no_grad():
                    logits = hf_model(torch.tensor([ids])).logits[0, -1].float()
                allowed = torch.tensor(params.allowed_token_ids)
                masked = torch.full_like(logits, float("-inf"))
                masked[allowed] = logits[allowed]
                processed = self.kwargs.get("logprobs_mode") == "processed_logprobs"
                logprobs = torch.log_softmax(masked if processed else logits, dim=-1)
                sampled = int(masked.argmax())
                top = set(logprobs.topk(params.logprobs).indices.tolist()) | {sampled}
                entry = {t: types.SimpleNamespace(logprob=float(logprobs[t])) for t in top}
                outputs.append(types.SimpleNamespace(outputs=[types.SimpleNamespace(logprobs=[entry])]))
            return outputs

        def classify(self, prompts, *, pooling_params=None, use_tqdm=True, lora_request=None, tokenization_kwargs=None):
            if self.runner_type != "pooling":
                raise ValueError(
                    "LLM.encode() is only supported for pooling models. Try passing `--runner pooling` to use the "
                    "model as a pooling model."
                )
            use_activation = (
                True if pooling_params is None or pooling_params.activation is None else pooling_params.activation
            )
            outputs = []
            for ids in self._add_requests(prompts):
                with torch.no_grad():
                    hidden = hf_model.model(torch.tensor([ids])).last_hidden_state[0, -1].float()  # LAST pooling
                logit = hidden @ self.score_weight
                value = torch.sigmoid(logit) if use_activation else logit
                outputs.append(
                    types.SimpleNamespace(outputs=types.SimpleNamespace(probs=[float(value)]), prompt_token_ids=ids)
                )
            return outputs

    module = types.SimpleNamespace(LLM=LLM, SamplingParams=SamplingParams, EngineArgs=EngineArgs)
    if activation_field is not None:
        module.PoolingParams = PoolingParams
    return module


@pytest.fixture
def clean_env(monkeypatch):
    """No launcher variables; whatever the teacher sets in os.environ is undone after the test."""
    for name in ("CUDA_VISIBLE_DEVICES", "WORLD_SIZE", "LOCAL_RANK", "RANK"):
        monkeypatch.setenv(name, "0")  # recorded, so teardown restores the original state
        monkeypatch.delenv(name)
    return monkeypatch


MAX_LENGTH = 256  # the long passage above is cut to exactly this many tokens


def _teachers(tiny_qwen3, **vllm_kwargs):
    hf = load_teacher(
        "qwen3_reranker", tiny_qwen3, max_length=MAX_LENGTH, instruction="Find the man page", device="cpu"
    )
    vllm = load_teacher(
        "qwen3_reranker",
        tiny_qwen3,
        backend="vllm",
        max_length=MAX_LENGTH,
        instruction="Find the man page",
        **vllm_kwargs,
    )
    return hf, vllm


# ---------------------------------------------------------------------------------------------------------
# Same prompt ids, same score, on both vLLM paths, including a prompt cut to exactly max_length
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fake_options, runner",
    [
        ({}, "pooling"),  # current vLLM: pooling runner, PoolingParams(use_activation=False)
        ({"activation_field": "activation"}, "pooling"),  # vLLM 0.10.x: PoolingParams(activation=False)
        ({"runner": False}, "generate"),  # no runner= engine argument: the generate fallback
        ({"activation_field": None}, "generate"),  # no PoolingParams at all
    ],
    ids=["pooling", "pooling-0.10", "generate-no-runner", "generate-no-pooling-params"],
)
def test_vllm_backend_gives_the_hf_prompt_ids_and_scores(tiny_qwen3, clean_env, fake_options, runner):
    from hf_distill.teachers.vllm_backend import Qwen3RerankerVLLMTeacher, vllm_prompts

    fake = fake_vllm(tiny_qwen3, **fake_options)
    clean_env.setitem(sys.modules, "vllm", fake)
    groups = small_groups()
    hf, vllm_teacher = _teachers(tiny_qwen3)
    assert isinstance(vllm_teacher, Qwen3RerankerVLLMTeacher)

    pairs = [(g.query, p) for g in groups for p in g.passages]
    hf_batch = hf.prompt.pad(hf.prompt.encode(pairs))
    hf_ids = [row[mask.bool()].tolist() for row, mask in zip(hf_batch["input_ids"], hf_batch["attention_mask"])]
    assert [p["prompt_token_ids"] for p in vllm_prompts(vllm_teacher.prompt, pairs)] == hf_ids
    assert max(len(ids) for ids in hf_ids) == MAX_LENGTH  # the edge vLLM's length rule is about

    vllm_scores = score_groups(vllm_teacher, groups, max_tokens_per_batch=100_000, progress=False)
    hf_scores = score_groups(hf, groups, max_tokens_per_batch=100_000, progress=False)
    for v, h in zip(vllm_scores, hf_scores):
        assert v == pytest.approx(h, abs=1e-4)
    engine = vllm_teacher.model
    assert engine.runner_type == runner and vllm_teacher.runner == runner
    assert [ids for call in engine.calls for ids in call] and all(
        ids in hf_ids for call in engine.calls for ids in call
    )
    assert vllm_teacher.num_bounded == 0


def test_pooling_runner_is_loaded_with_vllms_qwen3_reranker_overrides(tiny_qwen3, clean_env):
    fake = fake_vllm(tiny_qwen3)
    clean_env.setitem(sys.modules, "vllm", fake)
    _, teacher = _teachers(tiny_qwen3)
    teacher.score_batch([("ls", "lists files")])
    kwargs = teacher.model.kwargs
    assert kwargs["runner"] == "pooling"
    assert kwargs["hf_overrides"] == {
        "architectures": ["Qwen3ForSequenceClassification"],
        "classifier_from_token": ["no", "yes"],  # vLLM's score row is w[tokens[1]] - w[tokens[0]] = w_yes - w_no
        "is_original_qwen3_reranker": True,
    }
    assert kwargs["max_model_len"] == MAX_LENGTH  # the pooling runner accepts a prompt of exactly max_model_len
    assert kwargs["enable_prefix_caching"] is True and "logprobs_mode" not in kwargs


def test_generate_fallback_leaves_room_for_the_one_output_token(tiny_qwen3, clean_env):
    fake = fake_vllm(tiny_qwen3, runner=False)
    clean_env.setitem(sys.modules, "vllm", fake)
    _, teacher = _teachers(tiny_qwen3)
    long_pair = ("list files in a directory", "copy files " * 80)
    assert teacher.lengths([long_pair]) == [MAX_LENGTH]
    teacher.score_batch([long_pair])
    kwargs = teacher.model.kwargs
    assert "runner" not in kwargs and "hf_overrides" not in kwargs
    assert kwargs["max_model_len"] == MAX_LENGTH + 1
    assert kwargs["logprobs_mode"] == "processed_logprobs"


def test_engine_args_can_force_the_generate_runner(tiny_qwen3, clean_env):
    fake = fake_vllm(tiny_qwen3)
    clean_env.setitem(sys.modules, "vllm", fake)
    hf, teacher = _teachers(tiny_qwen3, engine_args='{"runner": "generate"}')
    pairs = [(g.query, p) for g in small_groups() for p in g.passages]
    assert teacher.runner == "generate" and teacher.fingerprint()["vllm_runner"] == "generate"
    assert teacher.score_batch(pairs)[:, 0].tolist() == pytest.approx(hf.score_batch(pairs)[:, 0].tolist(), abs=1e-4)
    assert teacher.model.runner_type == "generate" and teacher.model.kwargs["max_model_len"] == MAX_LENGTH + 1


def test_asking_for_the_pooling_runner_on_a_vllm_without_it_is_refused(tiny_qwen3, clean_env):
    clean_env.setitem(sys.modules, "vllm", fake_vllm(tiny_qwen3, runner=False))
    with pytest.raises(TeacherConfigError, match="pooling"):
        _teachers(tiny_qwen3, engine_args={"runner": "pooling"})


# ---------------------------------------------------------------------------------------------------------
# One GPU per process under a launcher
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "env, tensor_parallel_size, expected",
    [
        ({"WORLD_SIZE": "4", "LOCAL_RANK": "2", "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"}, 1, "2"),  # SLURM: all GPUs
        ({"WORLD_SIZE": "4", "LOCAL_RANK": "2", "CUDA_VISIBLE_DEVICES": "4, 5,6,7"}, 1, "6"),  # a subset, spaces
        ({"WORLD_SIZE": "2", "LOCAL_RANK": "1"}, 1, "1"),  # unset: LOCAL_RANK itself
        ({"WORLD_SIZE": "2", "LOCAL_RANK": "1", "CUDA_VISIBLE_DEVICES": "0,1,2,3"}, 2, "2,3"),  # 2 GPUs per engine
        ({"WORLD_SIZE": "2", "LOCAL_RANK": "1"}, 2, "2,3"),
        ({"WORLD_SIZE": "1", "CUDA_VISIBLE_DEVICES": "0,1"}, 1, "0,1"),  # one process: left as it is
        ({"WORLD_SIZE": "8", "LOCAL_RANK": "3", "CUDA_VISIBLE_DEVICES": "5"}, 1, "5"),  # srun --gpus-per-task=1
        ({}, 1, None),
    ],
)
def test_each_process_engine_sees_its_own_gpus(tiny_qwen3, clean_env, env, tensor_parallel_size, expected):
    fake = fake_vllm(tiny_qwen3)
    clean_env.setitem(sys.modules, "vllm", fake)
    for name, value in env.items():
        clean_env.setenv(name, value)
    teacher = load_teacher(
        "qwen3_reranker", tiny_qwen3, backend="vllm", max_length=MAX_LENGTH, tensor_parallel_size=tensor_parallel_size
    )
    teacher.score_batch([("ls", "lists files")])
    assert teacher.model.visible_devices == expected
    assert teacher.model.kwargs["tensor_parallel_size"] == tensor_parallel_size


def test_a_local_rank_beyond_the_visible_gpus_is_refused(tiny_qwen3, clean_env):
    clean_env.setitem(sys.modules, "vllm", fake_vllm(tiny_qwen3))
    clean_env.setenv("WORLD_SIZE", "4")
    clean_env.setenv("LOCAL_RANK", "3")
    clean_env.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with pytest.raises(TeacherConfigError, match=r"LOCAL_RANK=3.*CUDA_VISIBLE_DEVICES='0,1'.*Fix:"):
        load_teacher("qwen3_reranker", tiny_qwen3, backend="vllm", max_length=MAX_LENGTH).score_batch([("a", "b")])


# ---------------------------------------------------------------------------------------------------------
# Engine arguments, batching by query, the two halves of a batch, the fingerprint
# ---------------------------------------------------------------------------------------------------------


def test_engine_args_are_merged_into_the_llm_call(tiny_qwen3, clean_env):
    clean_env.setitem(sys.modules, "vllm", fake_vllm(tiny_qwen3))
    _, teacher = _teachers(tiny_qwen3, engine_args='{"max_num_batched_tokens": 65536, "enforce_eager": true}')
    teacher.score_batch([("ls", "lists files")])
    assert teacher.model.kwargs["max_num_batched_tokens"] == 65536 and teacher.model.kwargs["enforce_eager"] is True


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", r"--vllm_engine_args is not valid JSON"),
        ("[1, 2]", r"--vllm_engine_args must be a JSON object"),
        ('{"max_model_len": 4096}', r"--vllm_engine_args sets 'max_model_len'.*--max_length"),
        ('{"dtype": "half"}', r"--vllm_engine_args sets 'dtype'.*--dtype"),
        ('{"runner": "draft"}', r"--vllm_engine_args: runner must be one of"),
    ],
)
def test_bad_engine_args_name_the_flag(text, message):
    from hf_distill.teachers.vllm_backend import parse_engine_args

    with pytest.raises(ConfigError, match=message):
        parse_engine_args(text)


def test_a_querys_prompts_reach_vllm_together_for_its_prefix_cache(tiny_qwen3, clean_env):
    from hf_distill.teachers.vllm_backend import Qwen3RerankerVLLMTeacher

    assert Qwen3RerankerVLLMTeacher.batches_by_query is True
    clean_env.setitem(sys.modules, "vllm", fake_vllm(tiny_qwen3))
    _, teacher = _teachers(tiny_qwen3)
    groups = small_groups()
    pairs = {
        tuple(ids): pair
        for pair in {(g.query, p) for g in groups for p in g.passages}
        for ids in teacher.prompt.encode([pair])
    }
    score_groups(teacher, groups, max_tokens_per_batch=600, progress=False)
    calls = teacher.model.calls
    assert len(calls) > 1  # the budget cuts the work into several engine calls
    queries = [pairs[tuple(ids)][0] for call in calls for ids in call]
    runs = [q for i, q in enumerate(queries) if i == 0 or queries[i - 1] != q]
    assert len(runs) == len(set(queries))  # each query's prompts are one contiguous run


def test_prepare_batch_builds_token_prompts_without_the_engine(tiny_qwen3, clean_env):
    clean_env.setitem(sys.modules, "vllm", fake_vllm(tiny_qwen3))
    _, teacher = _teachers(tiny_qwen3)
    pairs = [("ls", "lists files"), ("cp", "copies files")]
    prepared = teacher.prepare_batch(pairs)
    assert prepared == [{"prompt_token_ids": ids} for ids in teacher.prompt.encode(pairs)]
    assert teacher._model is None  # nothing was loaded
    assert teacher.run_batch(prepared).shape == (2, 1) and teacher.model.calls == [
        [p["prompt_token_ids"] for p in prepared]
    ]


def test_fingerprint_has_the_resolved_dtype_and_the_runner(tiny_qwen3, clean_env):
    clean_env.setitem(sys.modules, "vllm", fake_vllm(tiny_qwen3))
    hf, teacher = _teachers(tiny_qwen3)  # dtype="auto" for both
    explicit = load_teacher(
        "qwen3_reranker",
        tiny_qwen3,
        backend="vllm",
        max_length=MAX_LENGTH,
        instruction="Find the man page",
        dtype="float32",
    )
    assert teacher.fingerprint()["dtype"] == hf.fingerprint()["dtype"] == "float32"  # auto resolves as for HF (CPU)
    assert teacher.fingerprint() == explicit.fingerprint()
    assert {**teacher.fingerprint(), "backend": "hf"} == {**hf.fingerprint(), "vllm_runner": "pooling"}
    teacher.score_batch([("ls", "lists files")])
    assert teacher.model.kwargs["dtype"] == "float32"  # vLLM runs the dtype the fingerprint names


# ---------------------------------------------------------------------------------------------------------
# Score formula of the generate path, missing vLLM, the CLI
# ---------------------------------------------------------------------------------------------------------


def test_vllm_scores_without_the_other_answer_use_the_smallest_logprob_as_bound():
    from hf_distill.teachers.vllm_backend import scores_from_outputs

    def output(logprobs):
        entry = {t: types.SimpleNamespace(logprob=lp) for t, lp in logprobs.items()}
        return types.SimpleNamespace(outputs=[types.SimpleNamespace(logprobs=[entry])])

    yes, no = 7, 9
    scores, bounded = scores_from_outputs(
        [output({yes: -0.5, no: -1.5, 3: -4.0}), output({yes: -0.01, 3: -6.0, 4: -9.0})], yes, no
    )
    assert scores[:, 0].tolist() == pytest.approx([1.0, 8.99]) and bounded == 1


def test_generate_path_without_logprobs_mode_scores_or_bounds(tiny_qwen3, clean_env):
    """vLLM < 0.10.2: raw top-20 logprobs. Where yes and no are both there the score is exact; where one is missing
    the smallest returned logprob stands in for it, which never flips the sign and only shrinks the magnitude."""
    clean_env.setitem(sys.modules, "vllm", fake_vllm(tiny_qwen3, runner=False, logprobs_mode=False))
    hf, teacher = _teachers(tiny_qwen3)
    pairs = [(g.query, p) for g in small_groups() for p in g.passages]
    scores = teacher.score_batch(pairs)[:, 0].tolist()
    assert "logprobs_mode" not in teacher.model.kwargs
    for v, h in zip(scores, hf.score_batch(pairs)[:, 0].tolist()):
        assert v == pytest.approx(h, abs=1e-4) or (v * h >= 0 and abs(v) <= abs(h))


def test_vllm_backend_without_vllm_says_how_to_install_it(tiny_qwen3, monkeypatch):
    from hf_distill.teachers.vllm_backend import VLLMNotInstalledError

    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail even where it is installed
    with pytest.raises(VLLMNotInstalledError, match="pip install vllm"):
        load_teacher("qwen3_reranker", tiny_qwen3, backend="vllm")


def _load_recipe():
    spec = importlib.util.spec_from_file_location("score_teacher", REPO / "recipes" / "score_teacher.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["score_teacher"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_cli_passes_vllm_engine_args_to_the_engine(tiny_qwen3, clean_env, tmp_path, capsys):
    fake = fake_vllm(tiny_qwen3)
    clean_env.setitem(sys.modules, "vllm", fake)
    recipe = _load_recipe()
    data = tmp_path / "in.jsonl"
    data.write_text(json.dumps({"query": "ls", "positive": ["lists files"], "negative": ["copies files"]}) + "\n")
    output = tmp_path / "out.jsonl"
    common = ["--teacher_model_name_or_path", tiny_qwen3, "--input_file", str(data), "--output_file", str(output)]
    common += ["--backend", "vllm", "--max_length", "128"]
    assert recipe.main([*common, "--vllm_engine_args", '{"max_num_seqs": 8, "enforce_eager": true}']) == 0
    engine = fake.LLM.instances[-1]
    assert engine.kwargs["max_num_seqs"] == 8 and engine.kwargs["enforce_eager"] is True
    assert engine.kwargs["gpu_memory_utilization"] == 0.9 and engine.kwargs["max_model_len"] == 128
    assert len(json.loads(output.read_text())["scores"]) == 2

    with pytest.raises(SystemExit) as exit_info:
        recipe.main([*common, "--output_file", str(tmp_path / "other.jsonl"), "--vllm_engine_args", "{bad"])
    assert exit_info.value.code == 2
    assert "--vllm_engine_args is not valid JSON" in capsys.readouterr().err
