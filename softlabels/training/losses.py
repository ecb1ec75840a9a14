"""Knowledge-distillation losses over stored soft labels.

A store keeps the teacher's logits ``z`` divided by the generation temperature ``T``
("stored rows", ``r = z / T``), so the teacher distribution at temperature ``T`` is just
``softmax(r)``. Each loss here takes the student's raw logits ``[B, C]`` and the teacher's soft
labels in one of the store's row encodings (``full``, ``topk``, ``sampled``) and returns the
batch mean as a 0-d tensor:

    alpha * T**2 * distillation_term + (1 - alpha) * cross_entropy(student_logits, targets)

The ``T**2`` factor keeps gradient magnitudes comparable across temperatures (Hinton et al.,
2015). The hard-label cross-entropy uses the student's untempered logits; with ``alpha == 1``
no targets are needed and any given are ignored.

Teacher tensors may come straight from a store chunk: they are moved to the student's device,
computed in float32 (float64 when the student is float64) and detached, so gradients flow to
the student logits only.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from softlabels.errors import InvalidArgumentError, UnknownNameError
from softlabels.format.encodings.topk import topk_target

__all__ = [
    "ENCODINGS",
    "RESIDUAL_RULES",
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

_TOPK_FIELDS = ("values", "indices")  # values: kept log-probabilities, as decoded
_SAMPLED_FIELDS = ("indices", "counts")
KEPT_MASS_TOLERANCE = 1e-3
"""How far above 1 the kept mass of top-k rows may be (float rounding) before they are refused."""


def retemper(stored_rows: Tensor, stored_temperature: float, new_temperature: float) -> Tensor:
    """Re-express stored rows at another temperature.

    Stored rows are ``z / stored_temperature``; the result is ``z / new_temperature``, ready for
    :func:`kd_loss` called with ``temperature=new_temperature``. Only ``full`` rows can be
    re-tempered exactly: a top-k row's log-normaliser depends on the classes it dropped.

    Args:
        stored_rows: Teacher logits divided by ``stored_temperature``.
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
    + (1 - alpha) * CE(student_logits, targets)``, averaged over the batch.

    Args:
        student_logits: Raw student logits ``[B, C]``.
        teacher_logits: Stored rows ``[B, C]``, i.e. teacher logits already divided by
            ``temperature`` (use :func:`retemper` to distil at another temperature).
        targets: Integer class labels ``[B]``; required when ``alpha < 1``.
        temperature: Distillation temperature ``T > 0``.
        alpha: Weight of the distillation term, in ``[0, 1]``.

    Returns:
        The batch-mean loss as a 0-d tensor.

    Raises:
        InvalidArgumentError: On a bad shape, dtype, temperature, alpha or missing targets.
    """
    student, hard_targets = _checked_inputs(student_logits, targets, temperature, alpha)
    teacher = _teacher_floats(teacher_logits, "teacher_logits", student)
    _check_shape(teacher, tuple(student.shape), "teacher_logits")
    log_q = F.log_softmax(student / temperature, dim=1)
    log_p = F.log_softmax(teacher, dim=1)
    kl = F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")
    return _blend(kl * temperature**2, student, hard_targets, alpha)


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

    Each row keeps the ``K`` most probable classes of the teacher at temperature ``T``:
    ``log_probs[b, j] = log p[b, indices[b, j]]``, the ``values`` that
    :meth:`~softlabels.format.encodings.TopKEncoding.decode` returns (kept mass at most 1, so
    the residual mass ``1 - sum_j exp(log_probs[b, j])`` is never negative).

    Residual rules:

    * ``"uniform"``: the residual mass is spread evenly over the ``C - K`` classes that were not
      kept, giving a dense teacher distribution over all ``C`` classes
      (:func:`~softlabels.format.encodings.topk_target`, the same one ``inspect`` reconstructs),
      and the loss is the full ``KL(teacher || softmax(student_logits / T))`` over ``C`` classes.
      With ``K == C`` there is no residual and the loss equals :func:`kd_loss` on the full rows.
    * ``"renormalize"``: the kept probabilities are rescaled to sum to 1, the student's tempered
      softmax is restricted to the same ``K`` classes and renormalised over them, and the loss is
      the KL between the two over the ``K`` kept classes only.

    Either KL is multiplied by ``T**2`` and ``alpha``, plus ``(1 - alpha) * CE(student_logits,
    targets)``, averaged over the batch.

    Args:
        student_logits: Raw student logits ``[B, C]``.
        log_probs: Log-probabilities of the kept classes ``[B, K]``, ``1 <= K <= C``.
        indices: Their classes ``[B, K]``, any integer dtype, distinct within a row, any order.
        targets: Integer class labels ``[B]``; required when ``alpha < 1``.
        temperature: Distillation temperature ``T > 0`` (the one the rows were stored at).
        alpha: Weight of the distillation term, in ``[0, 1]``.
        residual: One of :data:`RESIDUAL_RULES`.

    Returns:
        The batch-mean loss as a 0-d tensor.

    Raises:
        InvalidArgumentError: On a bad shape, dtype, index, temperature, alpha, missing targets,
            or kept probabilities that sum to more than 1 (raw logits passed as log-probabilities).
        UnknownNameError: If ``residual`` is not one of :data:`RESIDUAL_RULES`.
    """
    student, hard_targets = _checked_inputs(student_logits, targets, temperature, alpha, residual=residual)
    kept_log_probs, kept_classes = _topk_fields(log_probs, indices, student)
    scaled_student = student / temperature
    if residual == "uniform":
        kl = _uniform_residual_kl(scaled_student, kept_log_probs, kept_classes)
    else:
        kl = _renormalized_kl(scaled_student, kept_log_probs, kept_classes)
    return _blend(kl * temperature**2, student, hard_targets, alpha)


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

    Each row holds classes ``indices[b, s]`` drawn from ``softmax(r[b])`` (the teacher at
    temperature ``T``) and how often each was drawn, ``counts[b, s]``; slots with count 0 are
    padding and may hold any index, and a class may appear in several slots. The empirical
    teacher distribution is ``counts / counts.sum()`` per row, and the loss is
    ``T**2 * CE(empirical, softmax(student_logits / T))`` weighted by ``alpha``, plus
    ``(1 - alpha) * CE(student_logits, targets)``, averaged over the batch.

    The distillation term is an unbiased estimate of the full cross-entropy
    ``-T**2 * sum_c p_c log q_c``, whose gradient is the KL's gradient; its value exceeds the
    KL by the (unknown) teacher entropy, so it is not comparable with :func:`kd_loss` values.

    Args:
        student_logits: Raw student logits ``[B, C]``.
        indices: Sampled classes ``[B, S]``, any integer dtype.
        counts: Non-negative draw counts ``[B, S]`` (integer or float); each row must have a
            positive sum.
        targets: Integer class labels ``[B]``; required when ``alpha < 1``.
        temperature: Distillation temperature ``T > 0`` (the one the samples were drawn at).
        alpha: Weight of the distillation term, in ``[0, 1]``.

    Returns:
        The batch-mean loss as a 0-d tensor.

    Raises:
        InvalidArgumentError: On a bad shape, dtype, index, count, temperature, alpha or missing
            targets.
    """
    student, hard_targets = _checked_inputs(student_logits, targets, temperature, alpha)
    drawn_classes, weights = _sampled_fields(indices, counts, student)
    log_q = F.log_softmax(student / temperature, dim=1)
    cross_entropy = -(weights * log_q.gather(1, drawn_classes)).sum(dim=1).mean()
    return _blend(cross_entropy * temperature**2, student, hard_targets, alpha)


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
        student_logits: Raw student logits ``[B, C]``.
        labels: The batch's soft labels: for ``"full"`` a ``[B, C]`` tensor of stored rows or a
            mapping with key ``"logits"``; for ``"topk"`` a mapping with keys ``"values"`` (the
            kept log-probabilities, as :meth:`TopKEncoding.decode` returns them) and
            ``"indices"``; for ``"sampled"`` a mapping with keys
            ``"indices"``, ``"counts"``. Other keys are ignored.
        targets: Integer class labels ``[B]`` or None; required when ``alpha < 1``.
        encoding: One of :data:`ENCODINGS`.
        temperature: Distillation temperature ``T > 0``.
        alpha: Weight of the distillation term, in ``[0, 1]``.
        residual: One of :data:`RESIDUAL_RULES`; checked for every encoding so that a typo never
            goes unnoticed, but only ``"topk"`` uses it.

    Returns:
        The batch-mean loss as a 0-d tensor.

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
) -> tuple[Tensor, Tensor | None]:
    """The checks every loss starts with, in order; returns the student logits and the hard targets.

    ``residual`` is checked too (only :func:`topk_kd_loss` passes one; the default always passes).
    """
    student = _student_logits(student_logits)
    _check_temperature(temperature)
    _check_alpha(alpha)
    _check_residual_rule(residual)
    return student, _hard_targets(targets, student, alpha)


def _blend(distill: Tensor, student: Tensor, hard_targets: Tensor | None, alpha: float) -> Tensor:
    """Mix the distillation term with the hard-label CE; ``hard_targets`` is None iff alpha == 1."""
    if hard_targets is None:
        return distill
    return alpha * distill + (1.0 - alpha) * F.cross_entropy(student, hard_targets)


def _uniform_residual_kl(scaled_student: Tensor, kept_log_probs: Tensor, kept_classes: Tensor) -> Tensor:
    batch, num_classes = scaled_student.shape
    kept_probs, share = topk_target(kept_log_probs, num_classes, torch)
    teacher_probs = share.expand(batch, num_classes).contiguous().scatter(1, kept_classes, kept_probs)
    # A probability (not log) target: classes with zero mass contribute 0 instead of NaN.
    return F.kl_div(F.log_softmax(scaled_student, dim=1), teacher_probs, reduction="batchmean")


def _renormalized_kl(scaled_student: Tensor, kept_log_probs: Tensor, kept_classes: Tensor) -> Tensor:
    log_p = F.log_softmax(kept_log_probs, dim=1)
    log_q = F.log_softmax(scaled_student.gather(1, kept_classes), dim=1)
    return F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")


def _topk_fields(log_probs: Tensor, indices: Tensor, student: Tensor) -> tuple[Tensor, Tensor]:
    batch, num_classes = student.shape
    kept_log_probs = _teacher_floats(log_probs, "log_probs", student)
    if (
        kept_log_probs.ndim != 2
        or kept_log_probs.shape[0] != batch
        or not 1 <= kept_log_probs.shape[1] <= num_classes
    ):
        raise InvalidArgumentError(
            f"log_probs must have shape (B, K) with B = {batch} and 1 <= K <= C = {num_classes}, "
            f"got {tuple(kept_log_probs.shape)}"
        )
    kept_classes = _class_indices(indices, "indices", student)
    _check_shape(kept_classes, tuple(kept_log_probs.shape), "indices")
    _check_class_range(kept_classes, num_classes, "indices")
    _check_distinct_per_row(kept_classes, "indices")
    kept_mass = torch.exp(kept_log_probs).sum(dim=1)
    too_much = (kept_mass > 1.0 + KEPT_MASS_TOLERANCE).nonzero().flatten()[:5].tolist()
    if too_much:
        raise InvalidArgumentError(
            f"log_probs of rows {too_much} keep a probability mass above 1 "
            f"({kept_mass[too_much[0]].item():.4f}); pass log-probabilities (decoded top-k values), not logits"
        )
    return kept_log_probs, kept_classes


def _sampled_fields(indices: Tensor, counts: Tensor, student: Tensor) -> tuple[Tensor, Tensor]:
    """Return the drawn classes (padding pointed at class 0) and per-row normalised weights."""
    batch, num_classes = student.shape
    draw_counts = _teacher_floats(counts, "counts", student, allow_integer=True)
    if draw_counts.ndim != 2 or draw_counts.shape[0] != batch or draw_counts.shape[1] < 1:
        raise InvalidArgumentError(
            f"counts must have shape (B, S) with B = {batch} and S >= 1, got {tuple(draw_counts.shape)}"
        )
    drawn = _class_indices(indices, "indices", student)
    _check_shape(drawn, tuple(draw_counts.shape), "indices")
    if bool((~torch.isfinite(draw_counts) | (draw_counts < 0)).any()):
        raise InvalidArgumentError("counts must be finite and non-negative")
    totals = draw_counts.sum(dim=1, keepdim=True)
    empty_rows = (totals.squeeze(1) <= 0).nonzero().flatten().tolist()
    if empty_rows:
        raise InvalidArgumentError(f"counts of rows {empty_rows} sum to 0; every row needs a draw")
    # Padding slots may hold any index, even an invalid one; they weigh 0, so any class will do.
    drawn = torch.where(draw_counts > 0, drawn, torch.zeros_like(drawn))
    _check_class_range(drawn, num_classes, "indices")
    return drawn, draw_counts / totals


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
    if student_logits.ndim != 2 or student_logits.shape[0] < 1 or student_logits.shape[1] < 1:
        raise InvalidArgumentError(
            f"student_logits must have shape (B, C) with B, C >= 1, got {tuple(student_logits.shape)}"
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


def _check_class_range(classes: Tensor, num_classes: int, name: str) -> None:
    if bool(((classes < 0) | (classes >= num_classes)).any()):
        raise InvalidArgumentError(f"{name} must lie in [0, {num_classes})")


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
