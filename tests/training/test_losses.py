"""Tests of the distillation losses against dense references computed by hand."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from softlabels.errors import InvalidArgumentError, UnknownNameError
from softlabels.training.losses import (
    ENCODINGS,
    RESIDUAL_RULES,
    distillation_loss,
    kd_loss,
    retemper,
    sampled_kd_loss,
    topk_kd_loss,
)

BATCH = 5
CLASSES = 7


# --------------------------------------------------------------------------- references


def softmax(row: np.ndarray) -> np.ndarray:
    shifted = np.exp(row - row.max())
    normalized: np.ndarray = shifted / shifted.sum()
    return normalized


def kl(p: np.ndarray, q: np.ndarray) -> float:
    return sum(float(pi * math.log(pi / qi)) for pi, qi in zip(p, q, strict=False) if pi > 0)


def hard_ce(student: np.ndarray, targets: np.ndarray) -> float:
    return float(np.mean([-math.log(softmax(row)[t]) for row, t in zip(student, targets, strict=False)]))


def mix(kd_rows: list[float], student: np.ndarray, targets: np.ndarray | None, alpha: float) -> float:
    kd = float(np.mean(kd_rows))
    if targets is None:
        return kd
    return alpha * kd + (1 - alpha) * hard_ce(student, targets)


def ref_kd(
    student: np.ndarray, stored: np.ndarray, targets: np.ndarray | None, t: float, alpha: float
) -> float:
    rows = [t * t * kl(softmax(r), softmax(s / t)) for s, r in zip(student, stored, strict=False)]
    return mix(rows, student, targets, alpha)


def ref_topk_uniform(student: np.ndarray, log_probs: np.ndarray, indices: np.ndarray, t: float) -> float:
    rows = []
    for s, vals, idx in zip(student, log_probs, indices, strict=False):
        kept = {int(c): math.exp(v) for v, c in zip(vals, idx, strict=False)}
        residual = max(0.0, 1.0 - sum(kept.values()))
        others = CLASSES - len(kept)
        p = np.array([kept.get(c, residual / others if others else 0.0) for c in range(CLASSES)])
        rows.append(t * t * kl(p, softmax(s / t)))
    return float(np.mean(rows))


def ref_topk_renormalize(student: np.ndarray, values: np.ndarray, indices: np.ndarray, t: float) -> float:
    rows = []
    for s, vals, idx in zip(student, values, indices, strict=False):
        p = np.exp(vals) / np.exp(vals).sum()
        q_full = softmax(s / t)
        q = np.array([q_full[c] for c in idx])
        rows.append(t * t * kl(p, q / q.sum()))
    return float(np.mean(rows))


def ref_sampled(student: np.ndarray, indices: np.ndarray, counts: np.ndarray, t: float) -> float:
    rows = []
    for s, idx, cnt in zip(student, indices, counts, strict=False):
        dense = np.zeros(CLASSES)
        for c, n in zip(idx, cnt, strict=False):
            if n > 0:
                dense[c] += n
        p = dense / dense.sum()
        q = softmax(s / t)
        rows.append(t * t * -sum(p[c] * math.log(q[c]) for c in range(CLASSES) if p[c] > 0))
    return float(np.mean(rows))


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


def logits(gen: torch.Generator, batch: int = BATCH, scale: float = 3.0) -> torch.Tensor:
    return torch.randn(batch, CLASSES, generator=gen, dtype=torch.float64) * scale


def labels(gen: torch.Generator, batch: int = BATCH) -> torch.Tensor:
    return torch.randint(0, CLASSES, (batch,), generator=gen)


def topk_fields(stored: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The kept log-probabilities and classes of the ``k`` most probable classes (decoded top-k rows)."""
    values, indices = stored.topk(k, dim=1)
    return values - stored.logsumexp(dim=1, keepdim=True), indices


def close(actual: torch.Tensor, expected: float, rel: float = 1e-9) -> bool:
    return actual.ndim == 0 and math.isclose(actual.item(), expected, rel_tol=rel, abs_tol=1e-12)


# --------------------------------------------------------------------------- full rows


@pytest.mark.parametrize("temperature", [1.0, 4.0])
@pytest.mark.parametrize("alpha", [1.0, 0.3])
def test_kd_loss_matches_dense_reference(gen: torch.Generator, temperature: float, alpha: float) -> None:
    student, teacher, targets = logits(gen), logits(gen), labels(gen)
    stored = teacher / temperature
    loss = kd_loss(student, stored, targets, temperature=temperature, alpha=alpha)
    assert close(loss, ref_kd(student.numpy(), stored.numpy(), targets.numpy(), temperature, alpha))


def test_kd_loss_scales_the_kl_by_temperature_squared(gen: torch.Generator) -> None:
    student, teacher = logits(gen), logits(gen)
    for t in (1.0, 4.0):
        kls = [
            kl(softmax(z / t), softmax(s / t)) for s, z in zip(student.numpy(), teacher.numpy(), strict=False)
        ]
        loss = kd_loss(student, teacher / t, temperature=t)
        assert close(loss, t**2 * float(np.mean(kls)))


def test_kd_loss_is_zero_when_student_matches_teacher(gen: torch.Generator) -> None:
    teacher = logits(gen)
    assert kd_loss(teacher, teacher / 3.0, temperature=3.0).abs().item() < 1e-12


def test_alpha_zero_equals_plain_cross_entropy(gen: torch.Generator) -> None:
    student, targets = logits(gen), labels(gen)
    loss = kd_loss(student, logits(gen), targets, temperature=2.0, alpha=0.0)
    assert close(loss, F.cross_entropy(student, targets).item())
    assert close(loss, hard_ce(student.numpy(), targets.numpy()))


def test_alpha_one_ignores_targets(gen: torch.Generator) -> None:
    student, stored = logits(gen), logits(gen)
    without = kd_loss(student, stored, temperature=2.0)
    with_targets = kd_loss(student, stored, labels(gen), temperature=2.0)
    with_junk = kd_loss(student, stored, torch.tensor([99.0]), temperature=2.0)
    assert without.item() == with_targets.item() == with_junk.item()


def test_retemper_rescales_stored_rows(gen: torch.Generator) -> None:
    student, teacher = logits(gen), logits(gen)
    rows = retemper(teacher / 2.0, 2.0, 5.0)
    torch.testing.assert_close(rows, teacher / 5.0)
    assert close(
        kd_loss(student, rows, temperature=5.0),
        ref_kd(student.numpy(), (teacher / 5.0).numpy(), None, 5.0, 1.0),
    )


def test_half_precision_inputs_are_computed_in_float32(gen: torch.Generator) -> None:
    student, stored = logits(gen), logits(gen)
    loss = kd_loss(student.half(), stored.half(), temperature=2.0)
    assert loss.dtype == torch.float32
    expected = ref_kd(student.half().double().numpy(), stored.half().double().numpy(), None, 2.0, 1.0)
    assert close(loss, expected, rel=1e-5)


# --------------------------------------------------------------------------- top-k rows


@pytest.mark.parametrize("residual", RESIDUAL_RULES)
def test_topk_with_all_classes_equals_kd_loss(gen: torch.Generator, residual: str) -> None:
    student, stored, targets = logits(gen), logits(gen), labels(gen)
    full = kd_loss(student, stored, targets, temperature=3.0, alpha=0.6)
    topk = topk_kd_loss(
        student, *topk_fields(stored, CLASSES), targets, temperature=3.0, alpha=0.6, residual=residual
    )
    assert close(topk, full.item())


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_topk_uniform_matches_reference(gen: torch.Generator, temperature: float) -> None:
    student, stored = logits(gen), logits(gen) / temperature
    log_probs, indices = topk_fields(stored, 3)
    loss = topk_kd_loss(student, log_probs, indices, temperature=temperature)
    expected = ref_topk_uniform(student.numpy(), log_probs.numpy(), indices.numpy(), temperature)
    assert close(loss, expected)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_topk_renormalize_matches_reference(gen: torch.Generator, temperature: float) -> None:
    student, stored = logits(gen), logits(gen) / temperature
    log_probs, indices = topk_fields(stored, 3)
    loss = topk_kd_loss(student, log_probs, indices, temperature=temperature, residual="renormalize")
    assert close(loss, ref_topk_renormalize(student.numpy(), log_probs.numpy(), indices.numpy(), temperature))


def test_topk_mixes_in_cross_entropy(gen: torch.Generator) -> None:
    student, stored, targets = logits(gen), logits(gen), labels(gen)
    log_probs, indices = topk_fields(stored, 2)
    loss = topk_kd_loss(student, log_probs, indices, targets, temperature=2.0, alpha=0.25)
    kd = ref_topk_uniform(student.numpy(), log_probs.numpy(), indices.numpy(), 2.0)
    assert close(loss, 0.25 * kd + 0.75 * hard_ce(student.numpy(), targets.numpy()))


def test_topk_residual_is_clamped_at_zero(gen: torch.Generator) -> None:
    student, stored = logits(gen), logits(gen)
    log_probs, indices = topk_fields(stored, 3)
    # As if float rounding left the kept mass a little above 1 (within the tolerance).
    over_one = log_probs - torch.exp(log_probs).sum(dim=1, keepdim=True).log() + math.log(1.0005)
    loss = topk_kd_loss(student, over_one, indices, temperature=1.0)
    assert close(loss, ref_topk_uniform(student.numpy(), over_one.numpy(), indices.numpy(), 1.0))


def test_topk_refuses_rows_that_keep_more_than_all_the_mass(gen: torch.Generator) -> None:
    stored = logits(gen)
    raw_values, indices = stored.topk(3, dim=1)  # logits, not log-probabilities
    with pytest.raises(InvalidArgumentError, match="keep a probability mass above 1.*not logits"):
        topk_kd_loss(logits(gen), raw_values.abs() + 1.0, indices, temperature=1.0)


@pytest.mark.parametrize("residual", RESIDUAL_RULES)
def test_topk_accepts_uint8_indices_in_any_order(gen: torch.Generator, residual: str) -> None:
    student, stored = logits(gen), logits(gen)
    log_probs, indices = topk_fields(stored, 4)
    expected = topk_kd_loss(student, log_probs, indices, temperature=2.0, residual=residual)
    order = torch.tensor([2, 0, 3, 1])
    shuffled = topk_kd_loss(
        student,
        log_probs[:, order],
        indices[:, order].to(torch.uint8),
        temperature=2.0,
        residual=residual,
    )
    assert close(shuffled, expected.item())


# --------------------------------------------------------------------------- sampled rows


def test_sampled_matches_reference_with_padding_and_duplicates(gen: torch.Generator) -> None:
    student = logits(gen, batch=3)
    indices = torch.tensor([[1, 4, 4, 0], [6, 2, -1, 9], [3, 3, 3, 3]])
    counts = torch.tensor([[2, 1, 3, 0], [1, 5, 0, 0], [1, 0, 2, 0]], dtype=torch.uint8)
    loss = sampled_kd_loss(student, indices, counts, temperature=2.0)
    assert close(loss, ref_sampled(student.numpy(), indices.numpy(), counts.numpy(), 2.0))


def test_sampled_duplicates_equal_merged_counts(gen: torch.Generator) -> None:
    student = logits(gen, batch=1)
    split = sampled_kd_loss(student, torch.tensor([[3, 5, 3]]), torch.tensor([[1, 1, 2]]), temperature=2.0)
    merged = sampled_kd_loss(student, torch.tensor([[3, 5]]), torch.tensor([[3.0, 1.0]]), temperature=2.0)
    assert close(split, merged.item())


def test_sampled_mixes_in_cross_entropy(gen: torch.Generator) -> None:
    student, targets = logits(gen, batch=2), labels(gen, batch=2)
    indices, counts = torch.tensor([[0, 5], [2, 2]]), torch.tensor([[4, 1], [1, 1]])
    loss = sampled_kd_loss(student, indices, counts, targets, temperature=3.0, alpha=0.5)
    kd = ref_sampled(student.numpy(), indices.numpy(), counts.numpy(), 3.0)
    assert close(loss, 0.5 * kd + 0.5 * hard_ce(student.numpy(), targets.numpy()))


def test_sampled_loss_is_unbiased_for_the_full_cross_entropy(gen: torch.Generator) -> None:
    temperature, draws, samples = 2.0, 40_000, 4
    student, stored = logits(gen, batch=1), logits(gen, batch=1) / temperature
    p = softmax(stored[0].numpy())
    nll = -np.log(softmax(student[0].numpy() / temperature))
    exact = temperature**2 * float(p @ nll)
    # One batch of independent draws of the same row: the batch mean is the Monte-Carlo average.
    indices = torch.multinomial(
        torch.from_numpy(p).expand(draws, -1), samples, replacement=True, generator=gen
    )
    estimate = sampled_kd_loss(
        student.expand(draws, -1), indices, torch.ones_like(indices), temperature=temperature
    )
    std_error = temperature**2 * math.sqrt((p @ nll**2 - (p @ nll) ** 2) / (draws * samples))
    assert abs(estimate.item() - exact) < 5 * std_error


# --------------------------------------------------------------------------- gradients


def _loss_by_encoding(encoding: str, student: torch.Tensor, stored: torch.Tensor) -> torch.Tensor:
    if encoding == "full":
        return kd_loss(student, stored, temperature=2.0)
    if encoding == "topk":
        log_probs, indices = topk_fields(stored, 3)
        return topk_kd_loss(student, log_probs, indices, temperature=2.0)
    counts = torch.ones(BATCH, 2, dtype=torch.float64, requires_grad=True)
    return sampled_kd_loss(student, torch.zeros(BATCH, 2, dtype=torch.long), counts, temperature=2.0)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_gradients_flow_to_the_student_only(gen: torch.Generator, encoding: str) -> None:
    student = logits(gen).requires_grad_()
    stored = logits(gen).requires_grad_()
    loss = _loss_by_encoding(encoding, student, stored)
    student_grad, stored_grad = torch.autograd.grad(loss, [student, stored], allow_unused=True)
    assert bool(torch.isfinite(student_grad).all()) and student_grad.abs().sum() > 0
    assert stored_grad is None


def test_gradient_matches_softmax_difference(gen: torch.Generator) -> None:
    # d/ds of T^2 KL(p || softmax(s/T)) is T (q - p) per row, divided by B for the batch mean.
    student, stored = logits(gen).requires_grad_(), logits(gen)
    (grad,) = torch.autograd.grad(kd_loss(student, stored, temperature=3.0), [student])
    expected = 3.0 * (torch.softmax(student.detach() / 3.0, dim=1) - torch.softmax(stored, dim=1)) / BATCH
    torch.testing.assert_close(grad, expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_labels_read_on_the_cpu_follow_a_cuda_student(gen: torch.Generator) -> None:
    student, stored, targets = logits(gen), logits(gen), labels(gen)
    log_probs, indices = topk_fields(stored, 3)
    on_cpu = topk_kd_loss(student, log_probs, indices, targets, temperature=2.0, alpha=0.5)
    on_gpu = topk_kd_loss(student.cuda(), log_probs, indices, targets, temperature=2.0, alpha=0.5)
    assert on_gpu.device.type == "cuda"
    assert close(on_gpu.cpu(), on_cpu.item())


# --------------------------------------------------------------------------- dispatcher


def test_distillation_loss_dispatches_by_encoding(gen: torch.Generator) -> None:
    student, stored, targets = logits(gen), logits(gen), labels(gen)
    log_probs, indices = topk_fields(stored, 3)
    counts = torch.ones(BATCH, 3, dtype=torch.long)
    topk_labels = {"values": log_probs, "indices": indices, "log_normalizer": torch.zeros(BATCH)}

    def dispatched(
        soft: torch.Tensor | dict[str, torch.Tensor], encoding: str, residual: str = "uniform"
    ) -> float:
        loss = distillation_loss(
            student, soft, targets, encoding=encoding, temperature=2.0, alpha=0.5, residual=residual
        )
        return loss.item()

    full = kd_loss(student, stored, targets, temperature=2.0, alpha=0.5).item()
    assert dispatched(stored, "full") == dispatched({"logits": stored}, "full") == full
    for residual in RESIDUAL_RULES:
        topk = topk_kd_loss(
            student, log_probs, indices, targets, temperature=2.0, alpha=0.5, residual=residual
        )
        assert dispatched(topk_labels, "topk", residual) == topk.item()
    sampled = sampled_kd_loss(student, indices, counts, targets, temperature=2.0, alpha=0.5)
    assert dispatched({"indices": indices, "counts": counts}, "sampled") == sampled.item()


# --------------------------------------------------------------------------- validation

_S = torch.zeros(2, 4)
_T = torch.zeros(2, 4)
_Y = torch.tensor([0, 3])
_V = torch.full((2, 2), math.log(0.25))  # kept log-probabilities (mass 0.5)
_I = torch.tensor([[0, 1], [2, 3]])
_C = torch.ones(2, 2)

INVALID: dict[str, Callable[[], object]] = {
    "student not a tensor": lambda: kd_loss([[0.0]], _T, temperature=1.0),  # type: ignore[arg-type]
    "student integer": lambda: kd_loss(torch.zeros(2, 4, dtype=torch.long), _T, temperature=1.0),
    "student 1-d": lambda: kd_loss(torch.zeros(4), _T, temperature=1.0),
    "student empty batch": lambda: kd_loss(torch.zeros(0, 4), torch.zeros(0, 4), temperature=1.0),
    "teacher shape": lambda: kd_loss(_S, torch.zeros(2, 5), temperature=1.0),
    "teacher integer": lambda: kd_loss(_S, torch.zeros(2, 4, dtype=torch.long), temperature=1.0),
    "temperature zero": lambda: kd_loss(_S, _T, temperature=0.0),
    "temperature negative": lambda: kd_loss(_S, _T, temperature=-1.0),
    "temperature nan": lambda: kd_loss(_S, _T, temperature=math.nan),
    "temperature inf": lambda: kd_loss(_S, _T, temperature=math.inf),
    "temperature bool": lambda: kd_loss(_S, _T, temperature=True),
    "alpha above 1": lambda: kd_loss(_S, _T, _Y, temperature=1.0, alpha=1.5),
    "alpha below 0": lambda: kd_loss(_S, _T, _Y, temperature=1.0, alpha=-0.1),
    "alpha nan": lambda: kd_loss(_S, _T, _Y, temperature=1.0, alpha=math.nan),
    "alpha < 1 without targets": lambda: kd_loss(_S, _T, temperature=1.0, alpha=0.5),
    "targets shape": lambda: kd_loss(_S, _T, torch.tensor([0, 1, 2]), temperature=1.0, alpha=0.5),
    "targets float": lambda: kd_loss(_S, _T, torch.tensor([0.0, 1.0]), temperature=1.0, alpha=0.5),
    "targets out of range": lambda: kd_loss(_S, _T, torch.tensor([0, 4]), temperature=1.0, alpha=0.5),
    "targets negative": lambda: kd_loss(_S, _T, torch.tensor([-1, 0]), temperature=1.0, alpha=0.5),
    "retemper stored temperature": lambda: retemper(_T, 0.0, 1.0),
    "retemper new temperature": lambda: retemper(_T, 1.0, -2.0),
    "topk values 1-d": lambda: topk_kd_loss(_S, torch.zeros(2), _I, temperature=1.0),
    "topk K above C": lambda: topk_kd_loss(
        _S, torch.zeros(2, 5), torch.zeros(2, 5, dtype=torch.long), temperature=1.0
    ),
    "topk K zero": lambda: topk_kd_loss(
        _S, torch.zeros(2, 0), torch.zeros(2, 0, dtype=torch.long), temperature=1.0
    ),
    "topk batch mismatch": lambda: topk_kd_loss(
        _S, torch.zeros(3, 2), torch.zeros(3, 2, dtype=torch.long), temperature=1.0
    ),
    "topk indices shape": lambda: topk_kd_loss(_S, _V, torch.tensor([[0, 1, 2], [0, 1, 2]]), temperature=1.0),
    "topk indices float": lambda: topk_kd_loss(_S, _V, _I.float(), temperature=1.0),
    "topk indices out of range": lambda: topk_kd_loss(
        _S, _V, torch.tensor([[0, 4], [1, 2]]), temperature=1.0
    ),
    "topk indices repeated": lambda: topk_kd_loss(_S, _V, torch.tensor([[1, 1], [1, 2]]), temperature=1.0),
    "topk raw logits (kept mass above 1)": lambda: topk_kd_loss(_S, torch.ones(2, 2), _I, temperature=1.0),
    "topk values integer": lambda: topk_kd_loss(_S, _I, _I, temperature=1.0),
    "sampled counts 1-d": lambda: sampled_kd_loss(_S, _I, torch.ones(2), temperature=1.0),
    "sampled shape mismatch": lambda: sampled_kd_loss(_S, _I, torch.ones(2, 3), temperature=1.0),
    "sampled batch mismatch": lambda: sampled_kd_loss(
        _S, torch.zeros(3, 2, dtype=torch.long), torch.ones(3, 2), temperature=1.0
    ),
    "sampled no slots": lambda: sampled_kd_loss(
        _S, torch.zeros(2, 0, dtype=torch.long), torch.ones(2, 0), temperature=1.0
    ),
    "sampled negative count": lambda: sampled_kd_loss(
        _S, _I, torch.tensor([[1.0, -1.0], [1.0, 1.0]]), temperature=1.0
    ),
    "sampled nan count": lambda: sampled_kd_loss(
        _S, _I, torch.tensor([[1.0, math.nan], [1.0, 1.0]]), temperature=1.0
    ),
    "sampled bool counts": lambda: sampled_kd_loss(
        _S, _I, torch.ones(2, 2, dtype=torch.bool), temperature=1.0
    ),
    "sampled row without draws": lambda: sampled_kd_loss(
        _S, _I, torch.tensor([[1, 0], [0, 0]]), temperature=1.0
    ),
    "sampled drawn index out of range": lambda: sampled_kd_loss(
        _S, torch.tensor([[0, 4], [1, 2]]), _C, temperature=1.0
    ),
    "sampled indices float": lambda: sampled_kd_loss(_S, _I.float(), _C, temperature=1.0),
    "dispatch full mapping without logits": lambda: distillation_loss(
        _S, {"values": _T}, None, encoding="full", temperature=1.0, alpha=1.0
    ),
    "dispatch topk given a tensor": lambda: distillation_loss(
        _S, _T, None, encoding="topk", temperature=1.0, alpha=1.0
    ),
    "dispatch topk missing field": lambda: distillation_loss(
        _S, {"values": _V}, None, encoding="topk", temperature=1.0, alpha=1.0
    ),
    "dispatch sampled missing counts": lambda: distillation_loss(
        _S, {"indices": _I}, None, encoding="sampled", temperature=1.0, alpha=1.0
    ),
}


@pytest.mark.parametrize("call", INVALID.values(), ids=INVALID.keys())
def test_invalid_arguments_raise(call: Callable[[], object]) -> None:
    with pytest.raises(InvalidArgumentError):
        call()


def test_unknown_residual_rule_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownNameError, match="uniform, renormalize"):
        topk_kd_loss(_S, _V, _I, temperature=1.0, residual="renormalise")
    with pytest.raises(UnknownNameError, match="uniform, renormalize"):
        distillation_loss(_S, _T, None, encoding="full", temperature=1.0, alpha=1.0, residual="bogus")


def test_unknown_encoding_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownNameError, match="full, topk, sampled"):
        distillation_loss(_S, _T, None, encoding="dense", temperature=1.0, alpha=1.0)
