"""Ranking distillation losses, written once for every student type.

Every student (seq-cls reranker, causal-LM reranker, bi-encoder) ends its forward pass with a padded score
matrix, so every loss here is a pure function of three tensors of shape ``[B, N]`` (B query groups, N
candidate slots)::

    loss = fn(student_scores, teacher_scores, mask, **options)  # -> scalar tensor

``mask[b, n]`` is True where slot ``n`` of group ``b`` holds a real candidate. Padded slots never influence the
value or the gradient: listwise losses fill them with a very large negative number before a softmax (so their
probability is exactly 0) and pairwise losses drop every pair that touches them. Groups with 0 or 1 valid
candidates carry no ranking signal; they contribute nothing to pair and list losses, and a batch made only of
such groups returns a 0 that is still connected to ``student_scores`` (``backward()`` works, gradients are 0),
never NaN. Inputs in bf16/fp16 are computed in float32; float64 stays float64 (for ``gradcheck``). Teacher
scores are targets: they are detached.

Reductions follow sentence-transformers so the same numbers give the same loss:

* pairwise losses ("margin_mse", "margin_mse_triplets", "ranknet") average over all valid pairs of the batch
  (like ``MarginMSELoss``/``RankNetLoss``), so a group with more pairs weighs more;
* "lambdaloss" averages its weighted pair terms over all valid pairs of the batch (like ``LambdaLoss``);
* listwise losses ("kl", "listnet") average over groups that have at least two valid candidates (like
  ``DistillKLDivLoss``/``ListNetLoss`` with ``batchmean``, which count every row);
* "mse" averages over all valid candidates.

Add your own loss by name::

    from hf_distill.losses import DistillationLoss, register_loss

    @register_loss("hinge")
    def hinge(student_scores, teacher_scores, mask, margin: float = 1.0):
        ...

    loss_fn = DistillationLoss("hinge", margin=0.5)
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DistillationLoss",
    "available_losses",
    "get_loss",
    "hard_label_cross_entropy",
    "kl",
    "lambdaloss",
    "listnet",
    "margin_mse",
    "margin_mse_triplets",
    "mse",
    "ranknet",
    "register_loss",
    "teacher_score_spread",
]

LossFn = Callable[..., Tensor]

# name -> loss function; filled by @register_loss below and by users.
_REGISTRY: dict[str, LossFn] = {}

# The three positional inputs every loss takes; everything after them is an option.
_LOSS_INPUTS = ("student_scores", "teacher_scores", "mask")


# --------------------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------------------


def register_loss(name: str, *, override: bool = False) -> Callable[[LossFn], LossFn]:
    """Register a loss function under ``name`` so ``DistillationLoss(name)`` and recipes can use it.

    The function must take ``(student_scores, teacher_scores, mask, **options)`` and return a scalar tensor.

    Args:
        name: Name used in configs, e.g. ``loss: margin_mse``.
        override: Replace an existing loss of the same name (otherwise that is an error, so a typo or a
            second import cannot silently swap a built-in).

    Example:
        >>> @register_loss("doc_mean_gap")
        ... def doc_mean_gap(student_scores, teacher_scores, mask):
        ...     return ((student_scores - teacher_scores).abs() * mask).sum() / mask.sum()
        >>> "doc_mean_gap" in available_losses()
        True
        >>> _ = _REGISTRY.pop("doc_mean_gap")  # keep the doctest from leaking into the registry
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_loss: name must be a non-empty string, got {name!r}.")

    def decorator(fn: LossFn) -> LossFn:
        if not callable(fn):
            raise TypeError(f"register_loss({name!r}): expected a function, got {type(fn).__name__}.")
        if name in _REGISTRY and not override:
            existing = _REGISTRY[name]
            raise ValueError(
                f"register_loss({name!r}): a loss with this name is already registered "
                f"({existing.__module__}.{existing.__qualname__}). "
                f"Fix: pick another name, or pass override=True to replace it."
            )
        positional = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        ]
        has_var_positional = any(p.kind == p.VAR_POSITIONAL for p in positional)
        if len(positional) < len(_LOSS_INPUTS) and not has_var_positional:
            raise TypeError(
                f"register_loss({name!r}): {fn.__qualname__} takes {len(positional)} positional argument(s). "
                f"Fix: a loss must take (student_scores, teacher_scores, mask, **options)."
            )
        _REGISTRY[name] = fn
        return fn

    return decorator


def available_losses() -> list[str]:
    """Names of all registered losses, sorted."""
    return sorted(_REGISTRY)


def get_loss(name: str) -> LossFn:
    """Return the loss function registered under ``name``.

    Raises:
        ValueError: if no loss has that name; the message lists the available names.
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        pass
    close = difflib.get_close_matches(str(name), _REGISTRY, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"Unknown loss {name!r}.{hint} Available losses: {', '.join(available_losses())}. "
        f"Fix: use one of these names, or register your own with @register_loss({name!r})."
    )


# --------------------------------------------------------------------------------------------------------------
# Shared masking helpers (the flattening/padding logic lives here once, not in every loss)
# --------------------------------------------------------------------------------------------------------------


def _compute_dtype(tensor: Tensor) -> torch.dtype:
    # Softmaxes and squared differences lose too much in bf16/fp16; float64 is kept for gradcheck.
    return tensor.dtype if tensor.dtype in (torch.float32, torch.float64) else torch.float32


def _check_shapes(loss_name: str, student_scores: Tensor, **others: Tensor) -> None:
    if student_scores.dim() != 2:
        raise ValueError(
            f"{loss_name}: student_scores must have shape [B, N] (groups x candidates), got "
            f"{tuple(student_scores.shape)}. Fix: reshape the flat pair scores into the group matrix, "
            f"with mask=False in padded slots."
        )
    for input_name, tensor in others.items():
        if tensor.shape != student_scores.shape:
            raise ValueError(
                f"{loss_name}: {input_name} has shape {tuple(tensor.shape)} but student_scores has "
                f"{tuple(student_scores.shape)}. Fix: pass {input_name} for the same [B, N] groups and slots."
            )


def _prepare(
    loss_name: str, student_scores: Tensor, teacher_scores: Tensor, mask: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Validate shapes, cast to the compute dtype, and zero padded slots.

    Zeroing padded slots with ``torch.where`` keeps NaN/inf garbage there out of every sum while sending them
    an exact 0 gradient.
    """
    _check_shapes(loss_name, student_scores, teacher_scores=teacher_scores, mask=mask)
    mask = mask if mask.dtype == torch.bool else mask > 0
    dtype = _compute_dtype(student_scores)
    student = torch.where(mask, student_scores.to(dtype), 0.0)
    teacher = torch.where(mask, teacher_scores.detach().to(device=student.device, dtype=dtype), 0.0)
    return student, teacher, mask


def _check_positive(loss_name: str, **values: float) -> None:
    for option, value in values.items():
        if not (isinstance(value, (int, float)) and 0 < value < math.inf):
            raise ValueError(f"{loss_name}: {option} must be a positive finite number, got {value!r}.")


def _masked_mean(values: Tensor, keep: Tensor) -> Tensor:
    """Mean of ``values`` where ``keep``; 0 (still attached to the graph) when nothing is kept."""
    return torch.where(keep, values, 0.0).sum() / keep.sum().clamp(min=1)


def _masked_log_softmax(logits: Tensor, mask: Tensor) -> Tensor:
    # The most negative finite number, not -inf: an all-padded row then gives a finite uniform distribution
    # (later discarded) instead of NaN, and exp() of a padded slot is exactly 0 in any row with a real one.
    return logits.masked_fill(~mask, torch.finfo(logits.dtype).min).log_softmax(dim=-1)


def _valid_pairs(mask: Tensor) -> Tensor:
    """[B, N, N] mask of ordered pairs (i, j), i != j, of real candidates of the same group."""
    n = mask.shape[-1]
    not_self = ~torch.eye(n, dtype=torch.bool, device=mask.device)
    return mask[:, :, None] & mask[:, None, :] & not_self


def _listwise_groups(mask: Tensor) -> Tensor:
    """[B] mask of groups that have a ranking to learn (at least two real candidates)."""
    return mask.sum(dim=-1) >= 2


# --------------------------------------------------------------------------------------------------------------
# Built-in losses
# --------------------------------------------------------------------------------------------------------------


@register_loss("mse")
def mse(student_scores: Tensor, teacher_scores: Tensor, mask: Tensor) -> Tensor:
    r"""Pointwise MSE between student and teacher scores over valid candidates.

    .. math:: \mathcal{L} = \frac{1}{|V|} \sum_{(b, i) \in V} (s_{bi} - t_{bi})^2

    where V is the set of real (unmasked) candidates of the batch. Regresses the teacher's raw scale, so it only
    makes sense when the student can reproduce that scale (same head type, same score range). Used as the
    pointwise baseline in Hofstätter et al. 2020, "Improving Efficient Neural Ranking Models with
    Cross-Architecture Knowledge Distillation" (arXiv:2010.02666).

    Example:
        >>> s = torch.tensor([[2.0, 1.0, 0.0]])
        >>> t = torch.tensor([[3.0, 1.0, 0.0]])
        >>> round(mse(s, t, torch.ones(1, 3, dtype=torch.bool)).item(), 4)  # (1 + 0 + 0) / 3
        0.3333
    """
    student, teacher, mask = _prepare("mse", student_scores, teacher_scores, mask)
    return _masked_mean((student - teacher) ** 2, mask)


@register_loss("margin_mse")
def margin_mse(student_scores: Tensor, teacher_scores: Tensor, mask: Tensor) -> Tensor:
    r"""MarginMSE over all ordered pairs of valid candidates of each group.

    .. math:: \mathcal{L} = \frac{1}{|P|} \sum_{(b, i, j) \in P} \big((s_{bi} - s_{bj}) - (t_{bi} - t_{bj})\big)^2

    where P holds every ordered pair i != j of real candidates within one group. Only score *differences* are
    matched, so the student may differ from the teacher by a per-query offset (Hofstätter et al. 2020,
    "Improving Efficient Neural Ranking Models with Cross-Architecture Knowledge Distillation",
    arXiv:2010.02666). The squared error is symmetric in (i, j), so this equals the mean over unordered pairs.
    Pairs are averaged over the whole batch, as in sentence-transformers' ``MarginMSELoss``.

    Example:
        >>> s = torch.tensor([[2.0, 1.0, 0.0]])
        >>> t = torch.tensor([[3.0, 1.0, 0.0]])
        >>> # margins (0,1): 1 vs 2, (0,2): 2 vs 3, (1,2): 1 vs 1 -> errors 1, 1, 0 (twice each)
        >>> round(margin_mse(s, t, torch.ones(1, 3, dtype=torch.bool)).item(), 4)
        0.6667
    """
    student, teacher, mask = _prepare("margin_mse", student_scores, teacher_scores, mask)
    gap = student - teacher
    # (s_i - s_j) - (t_i - t_j) == (s_i - t_i) - (s_j - t_j): one [B, N, N] tensor instead of two.
    error = (gap[:, :, None] - gap[:, None, :]) ** 2
    return _masked_mean(error, _valid_pairs(mask))


@register_loss("margin_mse_triplets")
def margin_mse_triplets(
    student_scores: Tensor,
    teacher_scores: Tensor,
    mask: Tensor,
    top_k: int = 8,
    num_negatives: int = 4,
) -> Tensor:
    r"""MarginMSE on the reference practice's (query, positive, negative) triplets, built inside each group.

    Each group is sorted by teacher score, descending (ties keep their slot order). The first ``k`` candidates
    are positives and the next ``num_negatives`` are the negatives of *every* positive:

    .. math::
        k = \min(\text{top\_k}, n - 1), \quad
        P = \{(p, q) : \text{rank}(p) < k \le \text{rank}(q) < \min(k + \text{num\_negatives}, n)\}

        \mathcal{L} = \frac{1}{|P|} \sum_{(p, q) \in P} \big((s_p - s_q) - (t_p - t_q)\big)^2

    with n the number of real candidates of the group. Capping k at n - 1 keeps at least one negative in short
    groups; groups with fewer than two real candidates give no pair. With ``top_k=1`` a group
    ``(pos, neg_1..neg_m)`` gives exactly sentence-transformers' cross-encoder ``MarginMSELoss`` on
    ``(query, pos, neg_1, ..., neg_m)`` with labels ``[t_pos, t_neg_1, ...]``. Paper: Hofstätter et al. 2020,
    arXiv:2010.02666. Prefer "margin_mse" (all pairs, same forward cost) unless you must reproduce the reference.

    Args:
        top_k: Number of teacher-top candidates used as positives.
        num_negatives: Number of candidates ranked right after the positives used as negatives.

    Example:
        >>> s = torch.tensor([[0.0, 2.0, 1.0, 5.0]])
        >>> t = torch.tensor([[0.0, 3.0, 1.0, 9.0]])  # teacher order: slot 3, 1, 2, 0
        >>> m = torch.ones(1, 4, dtype=torch.bool)
        >>> # top_k=1 -> positive slot 3; next two -> negatives slots 1, 2: errors (3-6)^2, (4-8)^2
        >>> margin_mse_triplets(s, t, m, top_k=1, num_negatives=2).item()
        12.5
    """
    if not (isinstance(top_k, int) and top_k >= 1):
        raise ValueError(f"margin_mse_triplets: top_k must be an integer >= 1, got {top_k!r}.")
    if not (isinstance(num_negatives, int) and num_negatives >= 1):
        raise ValueError(f"margin_mse_triplets: num_negatives must be an integer >= 1, got {num_negatives!r}.")
    student, teacher, mask = _prepare("margin_mse_triplets", student_scores, teacher_scores, mask)

    # Rank of every slot by teacher score (0 = best); padded slots sort last so their rank is >= n.
    order = teacher.masked_fill(~mask, -math.inf).argsort(dim=-1, descending=True, stable=True)
    rank = order.argsort(dim=-1)
    n_valid = mask.sum(dim=-1, keepdim=True)
    k = (n_valid - 1).clamp(min=0, max=top_k)
    is_positive = rank < k
    is_negative = (rank >= k) & (rank < torch.minimum(k + num_negatives, n_valid))
    pairs = is_positive[:, :, None] & is_negative[:, None, :]

    gap = student - teacher
    error = (gap[:, :, None] - gap[:, None, :]) ** 2
    return _masked_mean(error, pairs)


@register_loss("kl")
def kl(
    student_scores: Tensor,
    teacher_scores: Tensor,
    mask: Tensor,
    teacher_temperature: float = 1.0,
    student_temperature: float = 1.0,
    scale_by_temperature: bool = True,
) -> Tensor:
    r"""Listwise KL divergence from the teacher's to the student's softmax over each group's candidates.

    .. math::
        p = \mathrm{softmax}(t / T_t), \quad q = \mathrm{softmax}(s / T_s), \quad
        \mathcal{L} = \frac{c}{|G|} \sum_{b \in G} \sum_i p_{bi} (\log p_{bi} - \log q_{bi}), \quad
        c = T_s^2 \text{ if scale\_by\_temperature else } 1

    where G holds the groups with at least two real candidates. Hinton et al. 2015, "Distilling the Knowledge in
    a Neural Network" (arXiv:1503.02531), soften both distributions with a temperature T and multiply by T^2
    because the gradients shrink as 1/T^2. With separate temperatures we follow sentence-transformers'
    ``DistillKLDivLoss`` and scale by the *student* temperature squared: the default reproduces it exactly
    (``batchmean`` KL times ``student_temperature**2``). A practical choice for raw reranker logits is a teacher
    temperature that brings the teacher's score spread to a few units.

    Args:
        teacher_temperature: T_t; larger = softer teacher distribution.
        student_temperature: T_s; for bi-encoders with cosine scores in [-1, 1] a small value (e.g. 0.05)
            lets the student reach a peaked distribution.
        scale_by_temperature: Multiply by T_s^2 (Hinton et al.); keep True to match sentence-transformers.

    Example:
        >>> s = torch.tensor([[1.0, 1.0]])
        >>> t = torch.tensor([[math.log(3.0), 0.0]])  # teacher p = (0.75, 0.25), student q = (0.5, 0.5)
        >>> round(kl(s, t, torch.ones(1, 2, dtype=torch.bool)).item(), 4)  # 0.75 ln 1.5 + 0.25 ln 0.5
        0.1308
    """
    _check_positive("kl", teacher_temperature=teacher_temperature, student_temperature=student_temperature)
    student, teacher, mask = _prepare("kl", student_scores, teacher_scores, mask)
    teacher_log_probs = _masked_log_softmax(teacher / teacher_temperature, mask)
    student_log_probs = _masked_log_softmax(student / student_temperature, mask)
    per_candidate = teacher_log_probs.exp() * (teacher_log_probs - student_log_probs)
    per_group = torch.where(mask, per_candidate, 0.0).sum(dim=-1)
    loss = _masked_mean(per_group, _listwise_groups(mask))
    return loss * student_temperature**2 if scale_by_temperature else loss


@register_loss("ranknet")
def ranknet(
    student_scores: Tensor,
    teacher_scores: Tensor,
    mask: Tensor,
    sigma: float = 1.0,
    min_teacher_gap: float = 0.0,
    weight_by_teacher_gap: bool = False,
) -> Tensor:
    r"""RankNet pairwise logistic loss on the preferences the teacher expresses.

    .. math::
        P = \{(b, i, j) : t_{bi} - t_{bj} > \text{min\_teacher\_gap}\}, \quad
        \mathcal{L} = \frac{1}{|P|} \sum_{(b, i, j) \in P} w_{bij} \log\big(1 + e^{-\sigma (s_{bi} - s_{bj})}\big)

    with :math:`w_{bij} = t_{bi} - t_{bj}` when ``weight_by_teacher_gap`` else 1 (the sum is still divided by
    the number of pairs). Burges et al. 2005, "Learning to Rank using Gradient Descent" (ICML). Only the
    teacher's order is used, not its scale, which makes it robust to teachers with very different score ranges.
    The defaults equal sentence-transformers' cross-encoder ``RankNetLoss(model, reduction_log="natural")`` with
    the teacher scores as its labels (its default ``reduction_log="binary"`` is this value divided by ln 2).

    Args:
        sigma: Slope of the logistic on the student score difference.
        min_teacher_gap: Ignore pairs the teacher barely separates (teacher noise); 0 keeps every strict
            preference, teacher ties never form a pair.
        weight_by_teacher_gap: Weight each pair by how strongly the teacher prefers it.

    Example:
        >>> s = torch.tensor([[0.0, 0.0, 0.0]])
        >>> t = torch.tensor([[2.0, 1.0, 1.0]])  # pairs (0,1), (0,2); (1,2) is a teacher tie
        >>> round(ranknet(s, t, torch.ones(1, 3, dtype=torch.bool)).item(), 4)  # ln 2
        0.6931
    """
    _check_positive("ranknet", sigma=sigma)
    student, teacher, mask = _prepare("ranknet", student_scores, teacher_scores, mask)
    teacher_gap = teacher[:, :, None] - teacher[:, None, :]
    pairs = _valid_pairs(mask) & (teacher_gap > min_teacher_gap)
    # softplus(-x) = log(1 + exp(-x)), computed without overflow for large |x|.
    pair_loss = F.softplus(-sigma * (student[:, :, None] - student[:, None, :]))
    if weight_by_teacher_gap:
        pair_loss = pair_loss * teacher_gap
    return _masked_mean(pair_loss, pairs)


@register_loss("listnet")
def listnet(
    student_scores: Tensor,
    teacher_scores: Tensor,
    mask: Tensor,
    teacher_temperature: float = 1.0,
    student_temperature: float = 1.0,
) -> Tensor:
    r"""ListNet top-one cross-entropy between the teacher's and the student's softmax over each group.

    .. math::
        \mathcal{L} = -\frac{1}{|G|} \sum_{b \in G} \sum_i \mathrm{softmax}(t_b / T_t)_i \,
        \log \mathrm{softmax}(s_b / T_s)_i

    where G holds the groups with at least two real candidates. Cao et al. 2007, "Learning to Rank: From
    Pairwise Approach to Listwise Approach" (ICML). It differs from "kl" only by the teacher's entropy, a
    constant, so its gradients are those of "kl" without the T_s^2 scaling. With both temperatures 1 it equals
    sentence-transformers' cross-encoder ``ListNetLoss`` with the teacher scores as labels.

    Args:
        teacher_temperature: T_t; larger = softer teacher target distribution.
        student_temperature: T_s; below 1 for students whose scores live in a narrow range (cosines).

    Example:
        >>> s = torch.tensor([[1.0, 1.0]])
        >>> t = torch.tensor([[5.0, 5.0]])
        >>> round(listnet(s, t, torch.ones(1, 2, dtype=torch.bool)).item(), 4)  # -ln 0.5
        0.6931
    """
    _check_positive("listnet", teacher_temperature=teacher_temperature, student_temperature=student_temperature)
    student, teacher, mask = _prepare("listnet", student_scores, teacher_scores, mask)
    teacher_probs = _masked_log_softmax(teacher / teacher_temperature, mask).exp()
    student_log_probs = _masked_log_softmax(student / student_temperature, mask)
    per_group = -torch.where(mask, teacher_probs * student_log_probs, 0.0).sum(dim=-1)
    return _masked_mean(per_group, _listwise_groups(mask))


@register_loss("lambdaloss")
def lambdaloss(
    student_scores: Tensor,
    teacher_scores: Tensor,
    mask: Tensor,
    teacher_temperature: float = 1.0,
    student_temperature: float = 1.0,
    mu: float = 10.0,
    k: int | None = None,
) -> Tensor:
    r"""LambdaLoss with the NDCG-Loss2++ weighting: pairwise logistic terms weighted by what swapping the pair,
    at the positions the student ranks it, would change in NDCG.

    With the teacher's graded relevance :math:`r_{bi} = (t_{bi} - \min_j t_{bj}) / T_t` (0 for the teacher's
    worst candidate), the student's ranking :math:`\pi_b` (candidates sorted by :math:`s / T_s`, position
    :math:`p = 1 \dots n`), gains :math:`G_{bi} = (2^{r_{bi}} - 1) / \mathrm{maxDCG}_b` and discounts
    :math:`D_p = \log_2(1 + p)`:

    .. math::
        w_{bij} = \mu \, \big|\tfrac{1}{D_{|p_i - p_j|}} - \tfrac{1}{D_{|p_i - p_j| + 1}}\big| \,
        |G_{bi} - G_{bj}| + \big|\tfrac{1}{D_{p_i}} - \tfrac{1}{D_{p_j}}\big| \, |G_{bi} - G_{bj}|,
        \qquad
        \mathcal{L} = -\frac{1}{|P|} \sum_{(b, i, j) \in P} w_{bij}
            \log_2 \sigma\big((s_{bi} - s_{bj}) / T_s\big)

    over the pairs P with :math:`r_{bi} > r_{bj}` of which at least one sits in the student's top k. Wang et
    al. 2018, "The LambdaLoss Framework for Ranking Metric Optimization" (CIKM): the first term is
    NDCG-Loss2 (a bound on NDCG's loss), the second LambdaRank's |ΔNDCG| (Burges et al. 2006). Only the
    teacher's order and relative gaps matter, not its offset. With ``teacher_temperature`` T it equals
    sentence-transformers' cross-encoder ``LambdaLoss(model)`` (NDCGLoss2PPScheme, mu 10, binary log) given
    the labels ``(teacher - the query's lowest teacher score) / T``; ``student_temperature`` is its ``1 / sigma``.

    Args:
        teacher_temperature: T_t; the teacher's score gap that makes one relevance grade (gain 2^r - 1).
        student_temperature: T_s; below 1 for students whose scores live in a narrow range (cosines).
        mu: weight of the NDCG-Loss2 term against the LambdaRank term.
        k: only pairs with a candidate in the student's top k count (NDCG@k); None = every pair.

    Example:
        >>> s = torch.tensor([[0.0, 0.0]])
        >>> t = torch.tensor([[1.0, 0.0]])  # one pair, relevance 1 vs 0, tied student scores
        >>> round(lambdaloss(s, t, torch.ones(1, 2, dtype=torch.bool)).item(), 4)  # 11 (1 - 1/log2 3) * 1
        4.0598
    """
    _check_positive(
        "lambdaloss", teacher_temperature=teacher_temperature, student_temperature=student_temperature, mu=mu
    )
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
        raise ValueError(f"lambdaloss: k must be a whole number >= 1 or None, got {k!r}.")
    student, teacher, mask = _prepare("lambdaloss", student_scores, teacher_scores, mask)
    n = student.shape[-1]
    lowest = torch.where(mask, teacher, math.inf).amin(dim=-1, keepdim=True)
    relevance = torch.where(mask, (teacher - lowest) / teacher_temperature, -math.inf)
    # Padded slots sort last (a finite floor, as sentence-transformers does, so score differences stay finite).
    logits = torch.where(mask, student / student_temperature, -1e16)
    sorted_logits, order = logits.sort(descending=True, dim=-1)
    relevance_by_rank = relevance.gather(1, order)
    ideal = relevance.sort(descending=True, dim=-1).values.clamp(min=0.0)
    gaps = relevance_by_rank[:, :, None] - relevance_by_rank[:, None, :]
    pairs = torch.isfinite(gaps) & (gaps > 0)  # i above j in relevance, both real
    top = min(k or n, n)
    in_top_k = torch.zeros(n, n, dtype=torch.bool, device=student.device)
    in_top_k[:top, :] = True
    in_top_k[:, :top] = True
    discount = torch.log2(1.0 + torch.arange(1, n + 1, device=student.device, dtype=student.dtype))
    max_dcg = ((2.0**ideal - 1) / discount)[:, :top].sum(dim=-1).clamp(min=1e-10)
    gain = (2.0 ** relevance_by_rank.clamp(min=0.0) - 1) / max_dcg[:, None]
    gain_gap = (gain[:, :, None] - gain[:, None, :]).abs()
    positions = torch.arange(1, n + 1, device=student.device)
    distance = (positions[:, None] - positions[None, :]).abs()
    # NDCG-Loss2's delta_{|i-j|} = |1/D_{|i-j|} - 1/D_{|i-j|+1}|, 0 on the diagonal (no pair).
    delta = (1.0 / discount[(distance - 1).clamp(min=0)] - 1.0 / discount[distance]).abs()
    delta = delta.masked_fill(distance == 0, 0.0)
    lambda_rank = (1.0 / discount[:, None] - 1.0 / discount[None, :]).abs()
    weights = (mu * delta + lambda_rank)[None] * gain_gap
    score_gaps = (sorted_logits[:, :, None] - sorted_logits[:, None, :]).clamp(min=-1e8, max=1e8)
    pair_loss = -weights * F.logsigmoid(score_gaps) / math.log(2.0)
    return _masked_mean(pair_loss, pairs & in_top_k)


def hard_label_cross_entropy(student_scores: Tensor, labels: Tensor, mask: Tensor, temperature: float = 1.0) -> Tensor:
    r"""Listwise softmax cross-entropy toward the labelled positives of each group.

    .. math::
        \mathcal{L} = \frac{1}{|G|} \sum_{b \in G} -\frac{1}{|R_b|} \sum_{i \in R_b}
        \log \frac{e^{s_{bi}/T}}{\sum_{j \in K_b} e^{s_{bj}/T}}

    R_b are the relevant candidates (``labels > 0``), K_b the candidates with a known label (``labels >= 0``),
    G the groups with at least one relevant candidate. Candidates with an unknown label (-1, or the -100 that
    Trainer pads with) are left out of the softmax: an unlabelled candidate may well be relevant, so treating
    it as a negative would teach the student the wrong thing. Groups without a positive are skipped; a batch
    without any positive returns a 0 connected to ``student_scores``. With a single positive this is the
    usual InfoNCE / softmax cross-entropy of dense retrieval (e.g. Karpukhin et al. 2020, DPR).

    Args:
        labels: [B, N] integers, 1 = relevant, 0 = not relevant, -1 = unknown.
        temperature: T dividing the student scores.

    Example:
        >>> s = torch.tensor([[1.0, 1.0, 9.0]])
        >>> labels = torch.tensor([[1, 0, -1]])  # the unknown third candidate is ignored
        >>> round(hard_label_cross_entropy(s, labels, torch.ones(1, 3, dtype=torch.bool)).item(), 4)
        0.6931
    """
    _check_positive("hard_label_cross_entropy", temperature=temperature)
    _check_shapes("hard_label_cross_entropy", student_scores, labels=labels, mask=mask)
    mask = mask if mask.dtype == torch.bool else mask > 0
    labels = labels.to(student_scores.device)
    known = mask & (labels >= 0)
    relevant = mask & (labels > 0)
    student = torch.where(known, student_scores.to(_compute_dtype(student_scores)), 0.0)
    log_probs = _masked_log_softmax(student / temperature, known)
    n_relevant = relevant.sum(dim=-1)
    per_group = -torch.where(relevant, log_probs, 0.0).sum(dim=-1) / n_relevant.clamp(min=1)
    return _masked_mean(per_group, n_relevant > 0)


def teacher_score_spread(score_lists: Iterable[Sequence[float]], max_groups: int = 10000) -> float:
    """Mean per-query standard deviation of teacher scores: the scale-free ``teacher_temperature="auto"``.

    Dividing teacher scores by their typical within-query spread gives every teacher the same softness: a
    bi-encoder's cosines (spread ~0.15) and a reranker's logits (spread ~3 for Qwen3-Reranker) both become
    logits with a per-query standard deviation of about 1. The spread is averaged over queries (not taken per
    query), so a query the teacher is unsure about keeps its flatter distribution. Uses the first
    ``max_groups`` groups with two or more scores; returns 1.0 when there are none or all scores tie.

    Example:
        >>> round(teacher_score_spread([[0.9, 0.7, 0.5], [0.2, 0.2]]), 4)  # stds 0.1633 and 0.0
        0.0816
    """
    spreads = []
    for scores in score_lists:
        if scores is not None and len(scores) >= 2:
            spreads.append(torch.as_tensor(list(scores), dtype=torch.float64).std(unbiased=False).item())
            if len(spreads) >= max_groups:
                break
    spread = sum(spreads) / len(spreads) if spreads else 0.0
    return spread if math.isfinite(spread) and spread > 0 else 1.0


# --------------------------------------------------------------------------------------------------------------
# nn.Module wrapper used by the trainer
# --------------------------------------------------------------------------------------------------------------


class DistillationLoss(nn.Module):
    """A registered distillation loss with its options bound, plus an optional hard-label term.

    ``forward(student_scores, teacher_scores, mask, labels=None)`` returns
    ``loss(student, teacher, mask, **options) + hard_label_weight * hard_label_cross_entropy(student, labels,
    mask, hard_label_temperature)``; the second term is added only when ``labels`` is given and
    ``hard_label_weight > 0``, and it is 0 for batches without a labelled positive.

    Options are checked against the loss function's signature when the module is built, so a typo fails
    before training starts rather than after the first batch.

    Args:
        name: A name from ``available_losses()``.
        hard_label_weight: Weight of the cross-entropy toward labelled positives (0 = teacher only).
        hard_label_temperature: Temperature of that cross-entropy.
        **options: Options of the loss function, e.g. ``teacher_temperature=2.0`` for "kl".

    Example:
        >>> loss_fn = DistillationLoss("kl", teacher_temperature=2.0)
        >>> s = torch.tensor([[1.0, 0.0]], requires_grad=True)
        >>> t = torch.tensor([[3.0, 1.0]])
        >>> loss = loss_fn(s, t, torch.ones(1, 2, dtype=torch.bool))
        >>> loss.backward()
        >>> loss_fn
        DistillationLoss(name='kl', teacher_temperature=2.0)
    """

    def __init__(
        self, name: str, hard_label_weight: float = 0.0, hard_label_temperature: float = 1.0, **options
    ) -> None:
        super().__init__()
        self.loss_fn = get_loss(name)
        _check_options(name, self.loss_fn, options)
        if not (isinstance(hard_label_weight, (int, float)) and 0 <= hard_label_weight < math.inf):
            raise ValueError(
                f"DistillationLoss({name!r}): hard_label_weight must be a finite number >= 0, "
                f"got {hard_label_weight!r}."
            )
        _check_positive(f"DistillationLoss({name!r})", hard_label_temperature=hard_label_temperature)
        self.name = name
        self.options = dict(options)
        self.hard_label_weight = float(hard_label_weight)
        self.hard_label_temperature = float(hard_label_temperature)

    def forward(
        self, student_scores: Tensor, teacher_scores: Tensor, mask: Tensor, labels: Tensor | None = None
    ) -> Tensor:
        loss = self.loss_fn(student_scores, teacher_scores, mask, **self.options)
        # No `labels.any()` check here: it would force a device sync every step, and the cross-entropy is
        # already 0 for batches without a positive.
        if labels is not None and self.hard_label_weight > 0:
            hard = hard_label_cross_entropy(student_scores, labels, mask, temperature=self.hard_label_temperature)
            loss = loss + self.hard_label_weight * hard
        return loss

    def extra_repr(self) -> str:
        parts = [f"name={self.name!r}"]
        if self.hard_label_weight:
            parts.append(f"hard_label_weight={self.hard_label_weight}")
            parts.append(f"hard_label_temperature={self.hard_label_temperature}")
        parts += [f"{key}={value!r}" for key, value in self.options.items()]
        return ", ".join(parts)


def _check_options(name: str, fn: LossFn, options: dict) -> None:
    """Fail early, naming the bad option and the accepted ones."""
    parameters = list(inspect.signature(fn).parameters.values())
    if any(p.kind == p.VAR_KEYWORD for p in parameters):
        return  # the loss takes **kwargs: it validates its own options
    # Skip the three inputs (whatever the user called them); the rest are options.
    accepted = [p.name for p in parameters[len(_LOSS_INPUTS) :] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    accepted_text = ", ".join(accepted) if accepted else "none"
    for option in options:
        if option not in accepted:
            close = difflib.get_close_matches(option, accepted, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"DistillationLoss({name!r}): unknown option {option!r}.{hint} "
                f"Accepted options of {name!r}: {accepted_text}. Fix: remove or rename it in the loss options."
            )
    missing = [
        p.name
        for p in parameters[len(_LOSS_INPUTS) :]
        if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in options
    ]
    if missing:
        raise ValueError(
            f"DistillationLoss({name!r}): missing required option(s) {', '.join(missing)}. "
            f"Fix: pass them, e.g. DistillationLoss({name!r}, {missing[0]}=...)."
        )
