"""Per-position (language-model) distillation losses against dense references on small vocabularies.

The student gives ``[B, L, V]`` logits, the teacher's decoded fields are ``[B, L, ...]`` and the
targets ``[B, L]`` mark ignored positions with -100. The references rebuild each position's
teacher distribution densely and compute the KL / cross-entropy directly.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from softlabels.errors import InvalidArgumentError
from softlabels.training.losses import (
    IGNORE_INDEX,
    RESIDUAL_RULES,
    cross_entropy_loss,
    distillation_loss,
    kd_loss,
    sampled_kd_loss,
    topk_kd_loss,
)

BATCH, POSITIONS, VOCAB, KEPT = 3, 5, 11, 4


# --------------------------------------------------------------------------- references


def softmax(row: np.ndarray) -> np.ndarray:
    shifted = np.exp(row - row.max())
    probs: np.ndarray = shifted / shifted.sum()
    return probs


def dense_kl(p: np.ndarray, q: np.ndarray) -> float:
    return float(sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0))


def dense_ce(p: np.ndarray, q: np.ndarray) -> float:
    return float(-sum(pi * math.log(qi) for pi, qi in zip(p, q, strict=True) if pi > 0))


def uniform_topk_teacher(values: np.ndarray, indices: np.ndarray) -> np.ndarray:
    kept = np.exp(values.astype(np.float64))
    dense = np.full(VOCAB, max(0.0, 1.0 - kept.sum()) / (VOCAB - len(indices)))
    dense[indices] = kept
    return dense


def sampled_teacher(indices: np.ndarray, counts: np.ndarray) -> np.ndarray:
    dense = np.zeros(VOCAB)
    np.add.at(dense, indices[counts > 0], counts[counts > 0])
    normalized: np.ndarray = dense / dense.sum()
    return normalized


def reference(
    per_position: Callable[[int, int, np.ndarray], float],
    student: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    alpha: float,
) -> float:
    """Mean over labelled positions of ``alpha * T^2 * per_position(b, l, q_T) + (1 - alpha) * CE``."""
    terms = []
    for b in range(BATCH):
        for pos in range(POSITIONS):
            target = int(targets[b, pos])
            if target == IGNORE_INDEX:
                continue
            row = student[b, pos].detach().double().numpy()
            distill = temperature**2 * per_position(b, pos, softmax(row / temperature))
            terms.append(alpha * distill + (1 - alpha) * -math.log(softmax(row)[target]))
    return float(np.mean(terms))


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(10)


def student_logits(gen: torch.Generator) -> torch.Tensor:
    return torch.randn(BATCH, POSITIONS, VOCAB, generator=gen, dtype=torch.float64) * 3


def stored_rows(gen: torch.Generator) -> torch.Tensor:
    return torch.randn(BATCH, POSITIONS, VOCAB, generator=gen, dtype=torch.float64) * 2


def targets_with_ignored(gen: torch.Generator) -> torch.Tensor:
    """Targets with a padded tail on sample 0 and one ignored position in the middle of sample 2."""
    targets = torch.randint(0, VOCAB, (BATCH, POSITIONS), generator=gen)
    targets[0, 3:] = IGNORE_INDEX
    targets[2, 1] = IGNORE_INDEX
    return targets


def topk_of(rows: torch.Tensor, k: int = KEPT) -> tuple[torch.Tensor, torch.Tensor]:
    log_probs = rows.log_softmax(dim=-1)
    return log_probs.topk(k, dim=-1)


def sampled_of(
    rows: torch.Tensor, gen: torch.Generator, samples: int = 6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draws per position as (indices, counts) with duplicates merged into the first slot, zero padding."""
    probs = rows.softmax(dim=-1).reshape(-1, VOCAB)
    draws = torch.multinomial(probs, samples, replacement=True, generator=gen)
    indices = torch.zeros_like(draws)
    counts = torch.zeros_like(draws)
    for cell, cell_draws in enumerate(draws.tolist()):
        for slot, (cls, count) in enumerate(sorted({c: cell_draws.count(c) for c in cell_draws}.items())):
            indices[cell, slot], counts[cell, slot] = cls, count
    return indices.reshape(BATCH, POSITIONS, samples), counts.reshape(BATCH, POSITIONS, samples)


def close(actual: torch.Tensor, expected: float) -> bool:
    return actual.ndim == 0 and math.isclose(actual.item(), expected, rel_tol=1e-9, abs_tol=1e-12)


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize("alpha", [1.0, 0.4])
@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_full_rows_match_the_dense_reference(gen: torch.Generator, alpha: float, temperature: float) -> None:
    student, rows, targets = student_logits(gen), stored_rows(gen), targets_with_ignored(gen)
    loss = kd_loss(student, rows, targets, temperature=temperature, alpha=alpha)
    teacher = rows.numpy()
    expected = reference(
        lambda b, pos, q: dense_kl(softmax(teacher[b, pos]), q), student, targets, temperature, alpha
    )
    assert close(loss, expected)


@pytest.mark.parametrize("alpha", [1.0, 0.4])
def test_topk_uniform_residual_matches_the_dense_reference(gen: torch.Generator, alpha: float) -> None:
    student, rows, targets = student_logits(gen), stored_rows(gen), targets_with_ignored(gen)
    values, indices = topk_of(rows)
    loss = topk_kd_loss(student, values, indices, targets, temperature=2.0, alpha=alpha)
    v, i = values.numpy(), indices.numpy()
    expected = reference(
        lambda b, pos, q: dense_kl(uniform_topk_teacher(v[b, pos], i[b, pos]), q),
        student,
        targets,
        2.0,
        alpha,
    )
    assert close(loss, expected)


def test_topk_renormalized_matches_the_dense_reference(gen: torch.Generator) -> None:
    student, rows, targets = student_logits(gen), stored_rows(gen), targets_with_ignored(gen)
    values, indices = topk_of(rows)
    loss = topk_kd_loss(student, values, indices, targets, temperature=2.0, residual="renormalize")
    v, i = values.numpy(), indices.numpy()

    def renormalized_kl(b: int, pos: int, q: np.ndarray) -> float:
        p = softmax(v[b, pos])
        kept_q = q[i[b, pos]]
        return dense_kl(p, kept_q / kept_q.sum())

    assert close(loss, reference(renormalized_kl, student, targets, 2.0, 1.0))


@pytest.mark.parametrize("alpha", [1.0, 0.4])
def test_sampled_matches_the_dense_reference(gen: torch.Generator, alpha: float) -> None:
    student, rows, targets = student_logits(gen), stored_rows(gen), targets_with_ignored(gen)
    indices, counts = sampled_of(rows, gen)
    loss = sampled_kd_loss(student, indices, counts, targets, temperature=2.0, alpha=alpha)
    i, c = indices.numpy(), counts.numpy()
    expected = reference(
        lambda b, pos, q: dense_ce(sampled_teacher(i[b, pos], c[b, pos]), q), student, targets, 2.0, alpha
    )
    assert close(loss, expected)


def test_topk_keeping_every_class_equals_the_full_loss(gen: torch.Generator) -> None:
    student, rows, targets = student_logits(gen), stored_rows(gen), targets_with_ignored(gen)
    full = kd_loss(student, rows, targets, temperature=2.0, alpha=0.7)
    for residual in RESIDUAL_RULES:
        every = topk_kd_loss(
            student, *topk_of(rows, VOCAB), targets, temperature=2.0, alpha=0.7, residual=residual
        )
        assert close(every, full.item())


@pytest.mark.parametrize("encoding", ["full", "topk", "sampled"])
def test_positions_equal_the_per_sample_loss_over_the_labelled_cells(
    gen: torch.Generator, encoding: str
) -> None:
    student, rows, targets = student_logits(gen), stored_rows(gen), targets_with_ignored(gen)
    labels = _labels(encoding, rows, gen)
    labelled = targets != IGNORE_INDEX
    per_position = distillation_loss(student, labels, targets, encoding=encoding, temperature=2.0, alpha=0.5)
    per_sample = distillation_loss(
        student[labelled],
        {name: field[labelled] for name, field in labels.items()},
        targets[labelled],
        encoding=encoding,
        temperature=2.0,
        alpha=0.5,
    )
    assert close(per_position, per_sample.item())


def test_without_targets_every_position_counts(gen: torch.Generator) -> None:
    student, rows = student_logits(gen), stored_rows(gen)
    none_ignored = torch.zeros(BATCH, POSITIONS, dtype=torch.long)
    assert close(
        kd_loss(student, rows, temperature=2.0), kd_loss(student, rows, none_ignored, temperature=2.0).item()
    )


def test_cross_entropy_loss_averages_over_labelled_positions(gen: torch.Generator) -> None:
    student, targets = student_logits(gen), targets_with_ignored(gen)
    expected = reference(lambda b, pos, q: 0.0, student, targets, 1.0, 0.0)
    assert close(cross_entropy_loss(student, targets), expected)
    assert close(kd_loss(student, stored_rows(gen), targets, temperature=2.0, alpha=0.0), expected)


# --------------------------------------------------------------------------- ignored positions


@pytest.mark.parametrize("encoding", ["full", "topk", "sampled"])
def test_ignored_positions_get_no_gradient_and_do_not_change_the_loss(
    gen: torch.Generator, encoding: str
) -> None:
    student, rows, targets = student_logits(gen), stored_rows(gen), targets_with_ignored(gen)
    labels = _labels(encoding, rows, gen)
    ignored = targets == IGNORE_INDEX
    moved = student.clone()
    moved[ignored] += torch.randn(int(ignored.sum()), VOCAB, generator=gen, dtype=torch.float64) * 5
    moved.requires_grad_()
    loss = distillation_loss(moved, labels, targets, encoding=encoding, temperature=2.0, alpha=0.5)
    (grad,) = torch.autograd.grad(loss, [moved])
    reference_loss = distillation_loss(
        student, labels, targets, encoding=encoding, temperature=2.0, alpha=0.5
    )
    assert close(loss, reference_loss.item())
    assert bool((grad[ignored] == 0).all()) and bool((grad[~ignored] != 0).any())


def test_ignored_positions_may_hold_any_teacher_fields(gen: torch.Generator) -> None:
    student, rows, targets = student_logits(gen), stored_rows(gen), targets_with_ignored(gen)
    ignored = targets == IGNORE_INDEX
    values, indices = topk_of(rows)
    junk_values = torch.where(ignored[..., None], torch.ones_like(values), values)  # mass above 1
    assert close(
        topk_kd_loss(student, junk_values, indices, targets, temperature=2.0),
        topk_kd_loss(student, values, indices, targets, temperature=2.0).item(),
    )
    drawn, counts = sampled_of(rows, gen)
    no_draws = torch.where(ignored[..., None], torch.zeros_like(counts), counts)
    assert close(
        sampled_kd_loss(student, drawn, no_draws, targets, temperature=2.0),
        sampled_kd_loss(student, drawn, counts, targets, temperature=2.0).item(),
    )


def test_a_batch_without_labelled_positions_gives_zero(gen: torch.Generator) -> None:
    student = student_logits(gen).requires_grad_()
    targets = torch.full((BATCH, POSITIONS), IGNORE_INDEX)
    loss = kd_loss(student, stored_rows(gen), targets, temperature=2.0, alpha=0.5)
    (grad,) = torch.autograd.grad(loss, [student])
    assert loss.item() == 0.0 and bool((grad == 0).all())


def test_a_labelled_position_without_draws_is_refused(gen: torch.Generator) -> None:
    student, rows, targets = student_logits(gen), stored_rows(gen), targets_with_ignored(gen)
    indices, counts = sampled_of(rows, gen)
    counts[1, 2] = 0
    with pytest.raises(InvalidArgumentError, match=r"positions \(flat index b \* L \+ l\) \[7\] sum to 0"):
        sampled_kd_loss(student, indices, counts, targets, temperature=2.0)


# --------------------------------------------------------------------------- no dense teacher


class _StudentSizedOutputs(TorchDispatchMode):
    """Records every op that outputs a tensor as large as the student's logits, and the storages they use."""

    def __init__(self, numel: int) -> None:
        super().__init__()
        self.numel = numel
        self.ops: list[str] = []
        self.storages: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(tensor, torch.Tensor) and tensor.numel() >= self.numel:
                self.ops.append(func.__name__)
                self.storages.add(tensor.untyped_storage().data_ptr())
        return out


@pytest.mark.parametrize("encoding", ["topk", "sampled"])
@pytest.mark.parametrize("residual", RESIDUAL_RULES)
def test_compact_losses_build_nothing_of_the_students_size_but_its_tempered_logits(
    gen: torch.Generator, encoding: str, residual: str
) -> None:
    student, rows, targets = student_logits(gen).float(), stored_rows(gen), targets_with_ignored(gen)
    labels = _labels(encoding, rows, gen)
    with _StudentSizedOutputs(student.numel()) as recorded:
        distillation_loss(
            student, labels, targets, encoding=encoding, temperature=2.0, alpha=1.0, residual=residual
        )
    # Views of the student and student / T (here one block of rows); a dense teacher would add
    # scatter, exp, mul...
    assert set(recorded.ops) <= {"view.default", "slice.Tensor", "div.Tensor"}, recorded.ops


@pytest.mark.parametrize("encoding", ["topk", "sampled"])
def test_a_compact_step_allocates_one_student_sized_tensor_besides_a_forward_temporary(
    gen: torch.Generator, encoding: str
) -> None:
    student = student_logits(gen).float().requires_grad_()
    labels, targets = _labels(encoding, stored_rows(gen), gen), targets_with_ignored(gen)
    with _StudentSizedOutputs(student.numel()) as recorded:
        loss = distillation_loss(student, labels, targets, encoding=encoding, temperature=2.0, alpha=1.0)
        loss.backward()
    # student / T inside the forward's log-sum-exp, and the gradient built in place.
    assert len(recorded.storages - {student.untyped_storage().data_ptr()}) <= 2, recorded.ops


# --------------------------------------------------------------------------- refusals

_S = torch.zeros(2, 3, 4)
_V = torch.full((2, 3, 2), math.log(0.25))
_I = torch.tensor([[0, 1]] * 3 * 2).reshape(2, 3, 2)
_Y = torch.zeros(2, 3, dtype=torch.long)

INVALID: dict[str, tuple[Callable[[], object], str]] = {
    "student 4-d": (
        lambda: kd_loss(torch.zeros(2, 3, 4, 1), torch.zeros(2, 3, 4, 1), temperature=1.0),
        "shape",
    ),
    "student empty positions": (
        lambda: kd_loss(torch.zeros(2, 0, 4), torch.zeros(2, 0, 4), temperature=1.0),
        "shape",
    ),
    "teacher per sample": (
        lambda: kd_loss(_S, torch.zeros(2, 4), temperature=1.0),
        r"teacher_logits must have shape \(2, 3, C\)",
    ),
    "teacher other vocabulary": (
        lambda: kd_loss(_S, torch.zeros(2, 3, 5), temperature=1.0),
        r"teacher_logits must have shape \(2, 3, 4\)",
    ),
    "targets per sample": (
        lambda: kd_loss(_S, _S, torch.tensor([0, 1]), temperature=1.0),
        r"targets must have shape \(2, 3\)",
    ),
    "targets out of range": (
        lambda: kd_loss(_S, _S, torch.tensor([[0, 4, 0], [0, 0, 0]]), temperature=1.0),
        r"targets must lie in \[0, 4\) or be -100",
    ),
    "targets negative, not -100": (
        lambda: kd_loss(_S, _S, torch.tensor([[0, -1, 0], [0, 0, 0]]), temperature=1.0, alpha=0.5),
        r"or be -100",
    ),
    "alpha < 1 without targets": (lambda: kd_loss(_S, _S, temperature=1.0, alpha=0.5), "needs targets"),
    "topk fields per sample": (
        lambda: topk_kd_loss(_S, torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.long), temperature=1.0),
        r"log_probs must have shape \(2, 3, K\)",
    ),
    "topk indices other positions": (
        lambda: topk_kd_loss(_S, _V, _I[:, :2], temperature=1.0),
        r"indices must have shape \(2, 3, K\)",
    ),
    "topk raw logits at a labelled position": (
        lambda: topk_kd_loss(_S, torch.ones(2, 3, 2), _I, _Y, temperature=1.0),
        r"positions \(flat index b \* L \+ l\) \[0, 1, 2, 3, 4\] keep a probability mass above 1",
    ),
    "sampled counts other batch": (
        lambda: sampled_kd_loss(_S, _I, torch.ones(3, 3, 2), temperature=1.0),
        r"counts must have shape \(2, 3, S\)",
    ),
}


@pytest.mark.parametrize(("call", "message"), INVALID.values(), ids=INVALID.keys())
def test_invalid_arguments_raise(call: Callable[[], object], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        call()


# --------------------------------------------------------------------------- helpers


def _labels(encoding: str, rows: torch.Tensor, gen: torch.Generator) -> dict[str, torch.Tensor]:
    if encoding == "full":
        return {"logits": rows}
    if encoding == "topk":
        values, indices = topk_of(rows)
        return {"values": values, "indices": indices}
    indices, counts = sampled_of(rows, gen)
    return {"indices": indices, "counts": counts}


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("encoding", ["full", "topk", "sampled"])
def test_gradients_match_finite_differences(gen: torch.Generator, encoding: str) -> None:
    # Two samples of three positions keep the finite differences quick; one position is ignored.
    student = student_logits(gen)[:2, :3].clone().requires_grad_()
    rows, targets = stored_rows(gen), targets_with_ignored(gen)
    labels = {name: field[:2, :3] for name, field in _labels(encoding, rows, gen).items()}
    targets = targets[:2, :3].clone()
    targets[1, 0] = IGNORE_INDEX

    def loss(logits: torch.Tensor) -> torch.Tensor:
        return distillation_loss(logits, labels, targets, encoding=encoding, temperature=3.0, alpha=0.6)

    assert torch.autograd.gradcheck(loss, (student,))


def test_uniform_topk_gradient_is_the_softmax_minus_the_dense_teacher(gen: torch.Generator) -> None:
    # d/ds of T^2 KL(p || softmax(s/T)) is T (q - p) per position, divided by the labelled positions.
    student, rows, targets = student_logits(gen).requires_grad_(), stored_rows(gen), targets_with_ignored(gen)
    values, indices = topk_of(rows)
    (grad,) = torch.autograd.grad(topk_kd_loss(student, values, indices, targets, temperature=3.0), [student])
    kept = values.exp()
    share = (1 - kept.sum(dim=-1, keepdim=True)) / (VOCAB - KEPT)
    teacher = share.expand(-1, -1, VOCAB).scatter(-1, indices, kept)
    labelled = (targets != IGNORE_INDEX)[..., None]
    expected = 3.0 * (torch.softmax(student.detach() / 3.0, dim=-1) - teacher) * labelled / labelled.sum()
    torch.testing.assert_close(grad, expected)


def test_a_hard_label_step_allocates_one_student_sized_tensor_besides_a_forward_temporary(
    gen: torch.Generator,
) -> None:
    student = student_logits(gen).float().requires_grad_()
    targets = targets_with_ignored(gen)
    with _StudentSizedOutputs(student.numel()) as recorded:
        cross_entropy_loss(student, targets).backward()
    assert len(recorded.storages - {student.untyped_storage().data_ptr()}) <= 2, recorded.ops
