"""Knowledge-distillation losses over stored soft labels.

A store keeps the teacher's logits ``z`` divided by the generation temperature ``T``
("stored rows", ``r = z / T``), so the teacher distribution at temperature ``T`` is just
``softmax(r)``. Each loss here takes the student's raw logits and the teacher's soft labels in
one of the store's row encodings (``full``, ``topk``, ``sampled``) and returns the mean over the
labelled cells as a 0-d tensor:

    alpha * T**2 * distillation_term + (1 - alpha) * cross_entropy(student_logits, targets)

The ``T**2`` factor keeps gradient magnitudes comparable across temperatures (Hinton et al.,
2015). The hard-label cross-entropy uses the student's untempered logits.

Two shapes are understood, told apart by the student's logits:

* **per sample**: student ``[B, C]``, teacher fields ``[B, ...]``, targets ``[B]``; the loss is
  the batch mean. With ``alpha == 1`` no targets are needed and any given are ignored.
* **per position** (language models): student ``[B, L, V]``, teacher fields ``[B, L, ...]``,
  targets ``[B, L]`` in which :data:`IGNORE_INDEX` (-100) marks a position without a label
  (padding, or no next token). Ignored positions count in neither term, at any ``alpha``; the
  loss is the mean over the batch's other positions (0 when there are none). Without targets
  (only allowed with ``alpha == 1``) every position counts.

Compact encodings never become dense: the losses take the student's log-probabilities at the
stored classes (``logsumexp`` and ``gather``). Every loss has its own backward pass that builds the
gradient of the student's logits in place, so a step holds one tensor of the logits' size besides
them (autograd's would build several). Teacher tensors may come straight from a store chunk: they are moved to
the student's device, computed in float32 (float64 when the student is float64) and detached,
so gradients flow to the student logits only.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from softlabels.errors import InvalidArgumentError, UnknownNameError
from softlabels.format.encodings.topk import topk_target

__all__ = [
    "ENCODINGS",
    "IGNORE_INDEX",
    "RESIDUAL_RULES",
    "cross_entropy_loss",
    "distillation_loss",
    "kd_loss",
    "retemper",
    "sampled_kd_loss",
    "topk_kd_loss",
]

ENCODINGS: tuple[str, ...] = ("full", "topk", "sampled")
"""Soft-label encodings understood by :func:`distillation_loss`."""

RESIDUAL_RULES: tuple[str, ...] = ("uniform", "renormalize")
"""Ways :func:`topk_kd_loss` treats the probability mass of the classes a top-k row dropped."""

IGNORE_INDEX = -100
"""The target of a position that carries no label; per-position losses skip it."""

_TOPK_FIELDS = ("values", "indices")  # values: kept log-probabilities, as decoded
_SAMPLED_FIELDS = ("indices", "counts")
KEPT_MASS_TOLERANCE = 1e-3
"""How far above 1 the kept mass of top-k rows may be (float rounding) before they are refused."""


@dataclass(frozen=True)
class _Cells:
    """The student's logits as ``[N, C]`` cells (a view, no copy) and which cells count.

    ``counted`` is None when every cell counts; ``hard_targets`` is None when the hard-label term
    is not needed (``alpha == 1``). ``leading`` is the shape every teacher field starts with.
    """

    logits: Tensor
    leading: tuple[int, ...]
    counted: Tensor | None
    hard_targets: Tensor | None

    @property
    def num_classes(self) -> int:
        return int(self.logits.shape[1])

    def flat(self, tensor: Tensor, name: str, width: str) -> Tensor:
        """A teacher field ``[*leading, W]`` as ``[N, W]``, refused (naming ``width``) on another shape."""
        if tensor.ndim != len(self.leading) + 1 or tuple(tensor.shape[:-1]) != self.leading:
            axes = ", ".join([*(str(size) for size in self.leading), width])
            raise InvalidArgumentError(f"{name} must have shape ({axes}), got {tuple(tensor.shape)}")
        return tensor.reshape(math.prod(self.leading), tensor.shape[-1])

    def mean(self, per_cell: Tensor) -> Tensor:
        """The mean of a per-cell loss ``[N]`` over the counted cells."""
        if self.counted is None:
            return per_cell.mean()
        kept = torch.where(self.counted, per_cell, per_cell.new_zeros(()))
        return kept.sum() / self.counted.sum().clamp(min=1)

    def first_counted(self, bad: Tensor) -> list[int]:
        """Up to five flat indices of counted cells where ``bad`` holds."""
        if self.counted is not None:
            bad = bad & self.counted
        return [int(cell) for cell in bad.nonzero().flatten()[:5]]


def retemper(stored_rows: Tensor, stored_temperature: float, new_temperature: float) -> Tensor:
    """Re-express stored rows at another temperature.

    Stored rows are ``z / stored_temperature``; the result is ``z / new_temperature``, ready for
    :func:`kd_loss` called with ``temperature=new_temperature``. Only ``full`` rows can be
    re-tempered exactly: a top-k row's log-normaliser depends on the classes it dropped.

    Args:
        stored_rows: Teacher logits divided by ``stored_temperature`` (any shape).
        stored_temperature: The temperature the rows were stored at (``> 0``).
        new_temperature: The temperature the student distils at (``> 0``).

    Returns:
        ``stored_rows * stored_temperature / new_temperature``.

    Raises:
        InvalidArgumentError: If a temperature is not a finite positive number.
    """
    _check_temperature(stored_temperature, "stored_temperature")
    _check_temperature(new_temperature, "new_temperature")
    return stored_rows * stored_temperature / new_temperature


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    targets: Tensor | None = None,
    *,
    temperature: float,
    alpha: float = 1.0,
) -> Tensor:
    """Hinton distillation loss against full stored rows.

    ``alpha * T**2 * KL(softmax(teacher_logits) || softmax(student_logits / T))
    + (1 - alpha) * CE(student_logits, targets)``, averaged over the batch (per position: over
    its labelled positions).

    Args:
        student_logits: Raw student logits ``[B, C]``, or ``[B, L, V]`` per position.
        teacher_logits: Stored rows of the same shape, i.e. teacher logits already divided by
            ``temperature`` (use :func:`retemper` to distil at another temperature).
        targets: Integer class labels ``[B]`` (required when ``alpha < 1``), or ``[B, L]`` with
            :data:`IGNORE_INDEX` at unlabelled positions.
        temperature: Distillation temperature ``T > 0``.
        alpha: Weight of the distillation term, in ``[0, 1]``.

    Returns:
        The mean loss as a 0-d tensor.

    Raises:
        InvalidArgumentError: On a bad shape, dtype, temperature, alpha or missing targets.
    """
    cells = _checked_inputs(student_logits, targets, temperature, alpha)
    teacher = cells.flat(
        _teacher_floats(teacher_logits, "teacher_logits", cells.logits), "teacher_logits", "C"
    )
    if teacher.shape[1] != cells.num_classes:
        raise InvalidArgumentError(
            f"teacher_logits must have shape {tuple(student_logits.shape)}, got {tuple(teacher_logits.shape)}"
        )
    kl: Tensor = _DenseKL.apply(cells.logits, temperature, teacher)
    return _blend(cells.mean(kl) * temperature**2, cells, alpha)


def topk_kd_loss(
    student_logits: Tensor,
    log_probs: Tensor,
    indices: Tensor,
    targets: Tensor | None = None,
    *,
    temperature: float,
    alpha: float = 1.0,
    residual: str = "uniform",
) -> Tensor:
    """Distillation loss against top-k stored rows.

    Each row (or position) keeps the ``K`` most probable classes of the teacher at temperature
    ``T``: ``log_probs[..., j] = log p[indices[..., j]]``, the ``values`` that
    :meth:`~softlabels.format.encodings.TopKEncoding.decode` returns (kept mass at most 1, so
    the residual mass ``1 - sum_j exp(log_probs[..., j])`` is never negative).

    Residual rules:

    * ``"uniform"``: the residual mass is spread evenly over the ``C - K`` classes that were not
      kept (:func:`~softlabels.format.encodings.topk_target`, the same distribution ``inspect``
      reconstructs), and the loss is the full ``KL(teacher || softmax(student_logits / T))``
      over ``C`` classes, computed from the student's log-probabilities at the kept classes and
      their sum over all classes, without a dense teacher. With ``K == C`` there is no residual
      and the loss equals :func:`kd_loss` on the full rows.
    * ``"renormalize"``: the kept probabilities are rescaled to sum to 1, the student's tempered
      softmax is restricted to the same ``K`` classes and renormalised over them, and the loss is
      the KL between the two over the ``K`` kept classes only.

    Either KL is multiplied by ``T**2`` and ``alpha``, plus ``(1 - alpha) * CE(student_logits,
    targets)``, averaged as :func:`kd_loss` does.

    Args:
        student_logits: Raw student logits ``[B, C]``, or ``[B, L, V]`` per position.
        log_probs: Log-probabilities of the kept classes ``[B, K]`` (``[B, L, K]``), ``1 <= K <= C``.
        indices: Their classes, same shape, any integer dtype, distinct within a row, any order.
        targets: As for :func:`kd_loss`.
        temperature: Distillation temperature ``T > 0`` (the one the rows were stored at).
        alpha: Weight of the distillation term, in ``[0, 1]``.
        residual: One of :data:`RESIDUAL_RULES`.

    Returns:
        The mean loss as a 0-d tensor.

    Raises:
        InvalidArgumentError: On a bad shape, dtype, index, temperature, alpha, missing targets,
            or kept probabilities that sum to more than 1 (raw logits passed as log-probabilities).
        UnknownNameError: If ``residual`` is not one of :data:`RESIDUAL_RULES`.
    """
    cells = _checked_inputs(student_logits, targets, temperature, alpha, residual=residual)
    kept_log_probs, kept_classes = _topk_fields(log_probs, indices, cells)
    if residual == "uniform":
        kl = _uniform_residual_kl(cells.logits, temperature, kept_log_probs, kept_classes)
    else:
        kl = _renormalized_kl(cells.logits, temperature, kept_log_probs, kept_classes)
    return _blend(cells.mean(kl) * temperature**2, cells, alpha)


def sampled_kd_loss(
    student_logits: Tensor,
    indices: Tensor,
    counts: Tensor,
    targets: Tensor | None = None,
    *,
    temperature: float,
    alpha: float = 1.0,
) -> Tensor:
    """Distillation loss against classes sampled from the teacher distribution.

    Each row (or position) holds classes ``indices[..., s]`` drawn from ``softmax(r)`` (the
    teacher at temperature ``T``) and how often each was drawn, ``counts[..., s]``; slots with
    count 0 are padding and may hold any index, and a class may appear in several slots. The
    empirical teacher distribution is ``counts / counts.sum()`` per row, and the loss is
    ``T**2 * CE(empirical, softmax(student_logits / T))`` weighted by ``alpha``, plus
    ``(1 - alpha) * CE(student_logits, targets)``, averaged as :func:`kd_loss` does.

    The distillation term is an unbiased estimate of the full cross-entropy
    ``-T**2 * sum_c p_c log q_c``, whose gradient is the KL's gradient; its value exceeds the
    KL by the (unknown) teacher entropy, so it is not comparable with :func:`kd_loss` values.

    Args:
        student_logits: Raw student logits ``[B, C]``, or ``[B, L, V]`` per position.
        indices: Sampled classes ``[B, S]`` (``[B, L, S]``), any integer dtype.
        counts: Non-negative draw counts, same shape (integer or float); each counted row must
            have a positive sum.
        targets: As for :func:`kd_loss`.
        temperature: Distillation temperature ``T > 0`` (the one the samples were drawn at).
        alpha: Weight of the distillation term, in ``[0, 1]``.

    Returns:
        The mean loss as a 0-d tensor.

    Raises:
        InvalidArgumentError: On a bad shape, dtype, index, count, temperature, alpha or missing
            targets.
    """
    cells = _checked_inputs(student_logits, targets, temperature, alpha)
    drawn_classes, weights = _sampled_fields(indices, counts, cells)
    cross_entropy = _sparse_cross_entropy(cells.logits, temperature, drawn_classes, weights)
    return _blend(cells.mean(cross_entropy) * temperature**2, cells, alpha)


def cross_entropy_loss(student_logits: Tensor, targets: Tensor) -> Tensor:
    """The hard-label loss: mean cross-entropy of the student over the labelled rows or positions.

    The loss of training without soft labels, matching the ``(1 - alpha)`` term of the
    distillation losses (per position, :data:`IGNORE_INDEX` targets are skipped and an all-ignored
    batch gives 0).

    Args:
        student_logits: Raw student logits ``[B, C]``, or ``[B, L, V]`` per position.
        targets: Integer class labels ``[B]``, or ``[B, L]``.

    Returns:
        The mean cross-entropy as a 0-d tensor.

    Raises:
        InvalidArgumentError: On a bad shape or dtype, or a target outside the classes.
    """
    cells = _checked_inputs(student_logits, targets, 1.0, 0.0)
    return _blend(cells.logits.new_zeros(()), cells, 0.0)


def distillation_loss(
    student_logits: Tensor,
    labels: Tensor | Mapping[str, Tensor],
    targets: Tensor | None,
    *,
    encoding: str,
    temperature: float,
    alpha: float,
    residual: str = "uniform",
) -> Tensor:
    """Pick the distillation loss for a soft-label encoding.

    Args:
        student_logits: Raw student logits ``[B, C]``, or ``[B, L, V]`` per position.
        labels: The batch's soft labels (``[B, ...]`` or ``[B, L, ...]``, as the student): for
            ``"full"`` a tensor of stored rows or a mapping with key ``"logits"``; for ``"topk"``
            a mapping with keys ``"values"`` (the kept log-probabilities, as
            :meth:`TopKEncoding.decode` returns them) and ``"indices"``; for ``"sampled"`` a
            mapping with keys ``"indices"``, ``"counts"``. Other keys are ignored.
        targets: Integer class labels ``[B]`` (``[B, L]`` with :data:`IGNORE_INDEX` at
            unlabelled positions) or None; required when ``alpha < 1``.
        encoding: One of :data:`ENCODINGS`.
        temperature: Distillation temperature ``T > 0``.
        alpha: Weight of the distillation term, in ``[0, 1]``.
        residual: One of :data:`RESIDUAL_RULES`; checked for every encoding so that a typo never
            goes unnoticed, but only ``"topk"`` uses it.

    Returns:
        The mean loss as a 0-d tensor.

    Raises:
        UnknownNameError: If ``encoding`` or ``residual`` is unknown.
        InvalidArgumentError: If ``labels`` lacks a field the encoding needs, or as raised by
            :func:`kd_loss`, :func:`topk_kd_loss` or :func:`sampled_kd_loss`.
    """
    _check_residual_rule(residual)
    if encoding == "full":
        return kd_loss(student_logits, _full_rows(labels), targets, temperature=temperature, alpha=alpha)
    if encoding == "topk":
        topk = _label_fields(labels, _TOPK_FIELDS, encoding)
        return topk_kd_loss(
            student_logits,
            topk["values"],
            topk["indices"],
            targets,
            temperature=temperature,
            alpha=alpha,
            residual=residual,
        )
    if encoding == "sampled":
        sampled = _label_fields(labels, _SAMPLED_FIELDS, encoding)
        return sampled_kd_loss(
            student_logits,
            sampled["indices"],
            sampled["counts"],
            targets,
            temperature=temperature,
            alpha=alpha,
        )
    raise UnknownNameError(
        f"unknown soft-label encoding {encoding!r}; valid encodings: {', '.join(ENCODINGS)}"
    )


def _checked_inputs(
    student_logits: Tensor,
    targets: Tensor | None,
    temperature: float,
    alpha: float,
    *,
    residual: str = "uniform",
) -> _Cells:
    """The checks every loss starts with, in order; returns the student's cells and the targets.

    ``residual`` is checked too (only :func:`topk_kd_loss` passes one; the default always passes).
    """
    student = _student_logits(student_logits)
    _check_temperature(temperature)
    _check_alpha(alpha)
    _check_residual_rule(residual)
    if student.ndim == 2:
        return _Cells(student, tuple(student.shape[:1]), None, _hard_targets(targets, student, alpha))
    return _position_cells(student, targets, alpha)


def _position_cells(student: Tensor, targets: Tensor | None, alpha: float) -> _Cells:
    """Cells of ``[B, L, V]`` logits; targets, when given, mark the ignored positions at any alpha."""
    batch, positions, num_classes = student.shape
    logits = student.reshape(batch * positions, num_classes)
    if targets is None:
        if alpha != 1.0:
            raise InvalidArgumentError(f"alpha = {alpha} < 1 mixes in the hard-label loss and needs targets")
        return _Cells(logits, (batch, positions), None, None)
    position_targets = _class_indices(targets, "targets", student)
    _check_shape(position_targets, (batch, positions), "targets")
    flat_targets = position_targets.reshape(-1)
    counted = flat_targets != IGNORE_INDEX
    _check_class_range(flat_targets[counted], num_classes, "targets", ignored=True)
    return _Cells(logits, (batch, positions), counted, None if alpha == 1.0 else flat_targets)


def _blend(distill: Tensor, cells: _Cells, alpha: float) -> Tensor:
    """Mix the distillation term with the hard-label CE; ``cells.hard_targets`` is None iff alpha == 1."""
    if cells.hard_targets is None:
        return distill
    # The cross-entropy against a one-hot teacher; ignored positions point at class 0 with weight 0.
    labelled = cells.hard_targets != IGNORE_INDEX
    classes = torch.where(labelled, cells.hard_targets, 0)[:, None]
    weights = labelled.to(cells.logits.dtype)[:, None]
    hard = cells.mean(_sparse_cross_entropy(cells.logits, 1.0, classes, weights))
    return alpha * distill + (1.0 - alpha) * hard


def _uniform_residual_kl(
    logits: Tensor, temperature: float, kept_log_probs: Tensor, kept_classes: Tensor
) -> Tensor:
    """Per-row KL from the uniform-residual teacher to ``softmax(logits / T)``, without a dense teacher.

    The teacher is the share ``s`` of each of the ``C - K`` classes not kept plus, at each kept
    class, its probability ``p_j``: ``s`` everywhere and ``p_j - s`` on top at the kept classes.
    The KL is its entropy (``[N, K]`` terms and ``(C - K) s log s``) plus the cross-entropy.
    """
    num_classes = logits.shape[1]
    kept_probs, share = topk_target(kept_log_probs, num_classes, torch)
    others = num_classes - kept_classes.shape[1]
    # xlogy: a share of 0 (nothing left over) contributes 0, not NaN.
    negative_entropy = torch.xlogy(kept_probs, kept_probs).sum(dim=1) + others * torch.xlogy(
        share, share
    ).squeeze(1)
    cross_entropy = _sparse_cross_entropy(
        logits, temperature, kept_classes, kept_probs - share, share.squeeze(1)
    )
    return negative_entropy + cross_entropy


def _sparse_cross_entropy(
    logits: Tensor, temperature: float, classes: Tensor, weights: Tensor, share: Tensor | None = None
) -> Tensor:
    """Per-row ``-sum_c p_c log softmax(logits / T)_c`` for ``p = share + sum_k weights_k [c = classes_k]``."""
    cross_entropy: Tensor = _SparseCrossEntropy.apply(logits, temperature, classes, weights, share)
    return cross_entropy


class _DenseKL(torch.autograd.Function):
    """Per-row ``KL(softmax(teacher) || softmax(logits / T))`` whose backward builds one ``[N, C]`` gradient.

    Autograd of ``log_softmax`` and ``kl_div`` keeps both log-softmaxes and builds more temporaries
    of the student's size; this keeps only its inputs and the rows' log-sum-exp, works a block of
    rows at a time and recomputes the teacher's softmax in the backward pass:
    ``d/dx_c = (softmax(x / T)_c - p_c) / T``.
    """

    @staticmethod
    def forward(ctx: Any, logits: Tensor, temperature: float, teacher: Tensor) -> Tensor:
        normalizer = _row_logsumexp(logits, temperature)
        # sum_c p_c log p_c - sum_c p_c x_c / T + logsumexp(x / T), as sum_c p_c = 1.
        kl = torch.empty_like(normalizer)
        for rows in _row_blocks(logits):
            log_p = F.log_softmax(teacher[rows], dim=1)
            probs = log_p.exp()
            kl[rows] = ((log_p - logits[rows] / temperature) * probs).sum(dim=1)
        ctx.temperature = temperature
        ctx.save_for_backward(logits, normalizer, teacher)
        return kl + normalizer

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_rows: Tensor) -> tuple[Tensor | None, None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None, None
        logits, normalizer, teacher = ctx.saved_tensors
        temperature = ctx.temperature
        grad = (logits / temperature).sub_(normalizer[:, None]).exp_()
        for rows in _row_blocks(teacher):
            grad[rows] -= torch.softmax(teacher[rows], dim=1)
        return grad.mul_((grad_rows / temperature)[:, None]), None, None


class _SparseCrossEntropy(torch.autograd.Function):
    """The student's cross-entropy against a teacher given at a few classes (plus a uniform share per row).

    Autograd of ``logsumexp`` and ``gather`` would keep the tempered logits and build several
    ``[N, C]`` temporaries in the backward pass; this function keeps only the student's logits and
    the rows' log-sum-exp, and its backward builds the one ``[N, C]`` gradient in place:
    ``d/dx_c = (total_p * softmax(x / T)_c - p_c) / T`` per row, ``total_p = sum_c p_c``.
    """

    @staticmethod
    def forward(
        ctx: Any, logits: Tensor, temperature: float, classes: Tensor, weights: Tensor, share: Tensor | None
    ) -> Tensor:
        normalizer = _row_logsumexp(logits, temperature)
        kept_log_q = logits.gather(1, classes) / temperature - normalizer[:, None]
        cross_entropy = -(weights * kept_log_q).sum(dim=1)
        total = weights.sum(dim=1)
        if share is not None:
            num_classes = logits.shape[1]
            all_log_q = logits.sum(dim=1) / temperature - num_classes * normalizer
            cross_entropy = cross_entropy - share * all_log_q
            total = total + num_classes * share
        ctx.temperature = temperature
        ctx.save_for_backward(logits, normalizer, classes, weights, total, share)
        return cross_entropy

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_rows: Tensor) -> tuple[Tensor | None, None, None, None, None]:
        logits, normalizer, classes, weights, total, share = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        temperature = ctx.temperature
        grad = (logits / temperature).sub_(normalizer[:, None]).exp_().mul_(total[:, None])
        if share is not None:
            grad.sub_(share[:, None])
        grad.scatter_add_(1, classes, -weights)
        return grad.mul_((grad_rows / temperature)[:, None]), None, None, None, None


ROW_BLOCK_ELEMENTS = 1 << 22
"""Entries of ``[N, C]`` rows that a loss's temporaries cover at once (16 MiB of float32)."""


def _row_blocks(rows: Tensor) -> list[slice]:
    """Slices of at most :data:`ROW_BLOCK_ELEMENTS` entries (at least one row) over the rows of ``rows``."""
    step = max(1, ROW_BLOCK_ELEMENTS // max(1, rows.shape[1]))
    return [slice(start, start + step) for start in range(0, rows.shape[0], step)]


def _row_logsumexp(logits: Tensor, temperature: float) -> Tensor:
    """``logsumexp(logits / T)`` per row, a block of rows at a time (``torch.logsumexp`` builds a temporary of its input's size)."""
    return torch.cat([torch.logsumexp(logits[rows] / temperature, dim=1) for rows in _row_blocks(logits)])


def _renormalized_kl(
    logits: Tensor, temperature: float, kept_log_probs: Tensor, kept_classes: Tensor
) -> Tensor:
    log_p = F.log_softmax(kept_log_probs, dim=1)
    # Gathered before tempering: only [N, K] logits are divided.
    log_q = F.log_softmax(logits.gather(1, kept_classes) / temperature, dim=1)
    return F.kl_div(log_q, log_p, log_target=True, reduction="none").sum(dim=1)


def _topk_fields(log_probs: Tensor, indices: Tensor, cells: _Cells) -> tuple[Tensor, Tensor]:
    num_classes = cells.num_classes
    kept_log_probs = cells.flat(_teacher_floats(log_probs, "log_probs", cells.logits), "log_probs", "K")
    if not 1 <= kept_log_probs.shape[1] <= num_classes:
        raise InvalidArgumentError(
            f"log_probs must keep 1 <= K <= C = {num_classes} classes, got shape {tuple(log_probs.shape)}"
        )
    kept_classes = cells.flat(_class_indices(indices, "indices", cells.logits), "indices", "K")
    _check_shape(kept_classes, tuple(kept_log_probs.shape), "indices")
    _check_class_range(kept_classes, num_classes, "indices")
    _check_distinct_per_row(kept_classes, "indices")
    kept_mass = torch.exp(kept_log_probs).sum(dim=1)
    too_much = cells.first_counted(kept_mass > 1.0 + KEPT_MASS_TOLERANCE)
    if too_much:
        raise InvalidArgumentError(
            f"log_probs of {_cell_kind(cells)} {too_much} keep a probability mass above 1 "
            f"({kept_mass[too_much[0]].item():.4f}); pass log-probabilities (decoded top-k values), not logits"
        )
    return kept_log_probs, kept_classes


def _sampled_fields(indices: Tensor, counts: Tensor, cells: _Cells) -> tuple[Tensor, Tensor]:
    """Return the drawn classes (padding pointed at class 0) and per-row normalised weights."""
    draw_counts = cells.flat(
        _teacher_floats(counts, "counts", cells.logits, allow_integer=True), "counts", "S"
    )
    if draw_counts.shape[1] < 1:
        raise InvalidArgumentError(f"counts need S >= 1 slots, got shape {tuple(counts.shape)}")
    drawn = cells.flat(_class_indices(indices, "indices", cells.logits), "indices", "S")
    _check_shape(drawn, tuple(draw_counts.shape), "indices")
    if bool((~torch.isfinite(draw_counts) | (draw_counts < 0)).any()):
        raise InvalidArgumentError("counts must be finite and non-negative")
    totals = draw_counts.sum(dim=1, keepdim=True)
    empty = cells.first_counted(totals.squeeze(1) <= 0)
    if empty:
        raise InvalidArgumentError(f"counts of {_cell_kind(cells)} {empty} sum to 0; every row needs a draw")
    # Padding slots may hold any index, even an invalid one; they weigh 0, so any class will do.
    drawn = torch.where(draw_counts > 0, drawn, torch.zeros_like(drawn))
    _check_class_range(drawn, num_classes=cells.num_classes, name="indices")
    # An ignored position may hold no draw at all; dividing by 1 there keeps its (unused) loss finite.
    return drawn, draw_counts / torch.where(totals > 0, totals, torch.ones_like(totals))


def _cell_kind(cells: _Cells) -> str:
    return "rows" if len(cells.leading) == 1 else "positions (flat index b * L + l)"


def _full_rows(labels: Tensor | Mapping[str, Tensor]) -> Tensor:
    if isinstance(labels, Tensor):
        return labels
    return _label_fields(labels, ("logits",), "full")["logits"]


def _label_fields(
    labels: Tensor | Mapping[str, Tensor], keys: tuple[str, ...], encoding: str
) -> Mapping[str, Tensor]:
    if not isinstance(labels, Mapping):
        raise InvalidArgumentError(
            f"encoding {encoding!r} needs a mapping with keys {', '.join(keys)}, got {type(labels).__name__}"
        )
    missing = [key for key in keys if key not in labels]
    if missing:
        raise InvalidArgumentError(f"encoding {encoding!r} labels lack field(s): {', '.join(missing)}")
    return labels


def _student_logits(student_logits: Tensor) -> Tensor:
    if not isinstance(student_logits, Tensor) or not student_logits.is_floating_point():
        raise InvalidArgumentError("student_logits must be a floating-point tensor")
    if student_logits.ndim not in (2, 3) or 0 in student_logits.shape:
        raise InvalidArgumentError(
            "student_logits must have shape (B, C), or (B, L, V) per position, with no empty axis; "
            f"got {tuple(student_logits.shape)}"
        )
    # Half-precision softmax over many classes loses too much; float64 callers keep float64.
    compute_dtype = torch.float64 if student_logits.dtype == torch.float64 else torch.float32
    return student_logits.to(compute_dtype)


def _teacher_floats(tensor: Tensor, name: str, student: Tensor, *, allow_integer: bool = False) -> Tensor:
    """Return a teacher tensor as a constant on the student's device and dtype."""
    if not isinstance(tensor, Tensor) or not (
        tensor.is_floating_point() or (allow_integer and _is_integer(tensor))
    ):
        kind = "real" if allow_integer else "floating-point"
        raise InvalidArgumentError(f"{name} must be a {kind} tensor")
    return tensor.detach().to(device=student.device, dtype=student.dtype)


def _class_indices(tensor: Tensor, name: str, student: Tensor) -> Tensor:
    if not isinstance(tensor, Tensor) or not _is_integer(tensor):
        raise InvalidArgumentError(f"{name} must be an integer tensor")
    return tensor.detach().to(device=student.device, dtype=torch.int64)


def _hard_targets(targets: Tensor | None, student: Tensor, alpha: float) -> Tensor | None:
    """Validate the class labels the CE term needs; None when alpha == 1 makes them unused."""
    if alpha == 1.0:
        return None
    if targets is None:
        raise InvalidArgumentError(f"alpha = {alpha} < 1 mixes in the hard-label loss and needs targets")
    batch, num_classes = student.shape
    hard_targets = _class_indices(targets, "targets", student)
    _check_shape(hard_targets, (batch,), "targets")
    _check_class_range(hard_targets, num_classes, "targets")
    return hard_targets


def _is_integer(tensor: Tensor) -> bool:
    return not (tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool)


def _check_shape(tensor: Tensor, expected: tuple[int, ...], name: str) -> None:
    if tuple(tensor.shape) != expected:
        raise InvalidArgumentError(f"{name} must have shape {expected}, got {tuple(tensor.shape)}")


def _check_class_range(classes: Tensor, num_classes: int, name: str, *, ignored: bool = False) -> None:
    if bool(((classes < 0) | (classes >= num_classes)).any()):
        besides = f" or be {IGNORE_INDEX} (ignored)" if ignored else ""
        raise InvalidArgumentError(f"{name} must lie in [0, {num_classes}){besides}")


def _check_distinct_per_row(classes: Tensor, name: str) -> None:
    ordered = classes.sort(dim=1).values
    if bool((ordered[:, 1:] == ordered[:, :-1]).any()):
        raise InvalidArgumentError(f"{name} must not repeat a class within a row")


def _check_temperature(temperature: float, name: str = "temperature") -> None:
    if not _is_real(temperature) or not math.isfinite(temperature) or temperature <= 0:
        raise InvalidArgumentError(f"{name} must be a finite number > 0, got {temperature!r}")


def _check_alpha(alpha: float) -> None:
    if not _is_real(alpha) or not 0.0 <= alpha <= 1.0:
        raise InvalidArgumentError(f"alpha must be a number in [0, 1], got {alpha!r}")


def _check_residual_rule(residual: str) -> None:
    if residual not in RESIDUAL_RULES:
        raise UnknownNameError(
            f"unknown top-k residual rule {residual!r}; valid rules: {', '.join(RESIDUAL_RULES)}"
        )


def _is_real(value: object) -> bool:
    # bool is an int subclass, but True is never a meaningful temperature or weight.
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
