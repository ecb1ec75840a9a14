"""Choosing a teacher from its stores alone (``softlabels compare``): quality, agreement and a temperature advisory.

Every figure comes from the stores, never from running a model. Per store, against its stored
targets:

* teacher accuracy (the most probable class);
* NLL and expected calibration error at T=1, the teacher's own calibration: a full store's rows
  ``z = logits / T`` are re-tempered to ``z * T``. A compact store cannot be re-tempered, so its NLL
  and ECE are those of the distribution it stands for (:meth:`Encoding.reconstruct`) at its stored
  T, and the report says so (``nll_temperature``); a sampled store's NLL is infinite whenever the
  target class was never drawn. For a ``probs`` merge (which stores ``log p_mix`` at T), the T=1
  figures are of the re-tempered mixture ``p_mix^T`` (normalised), not of a mixture of the
  members at T=1;
* mean entropy at the stored T (what a student is taught).

Between every two stores: the share of rows whose most probable classes agree. The stores must
label the same data (:func:`check_same_data`) with the same label axes.

Stores with label axes (views, token positions) are measured per label cell: every figure is a
mean over cells, and positions whose target is ignored (``-100``) are left out of all of them.

The temperature advisory gives, for each candidate T (:data:`ADVISORY_TEMPERATURES` and the stored
one; compact stores: the stored one only), the mean entropy and the mean top probability, and a
warning when the distribution is nearly uniform (mean entropy above :data:`NEAR_UNIFORM_SHARE` of
``log C``): the documented failure mode where a weak teacher at a high temperature teaches little
but the uniform distribution, and its students lose to hard labels.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from softlabels.defaults import ADVISORY_TEMPERATURES
from softlabels.errors import InvalidArgumentError, InvalidSettingError, StoreMismatchError
from softlabels.format.encodings import cell_targets, flatten_cells, row_encoding
from softlabels.format.encodings.base import logsumexp, softmax
from softlabels.format.identity import Scope, mismatches, store_identity
from softlabels.format.schema import IGNORED_TARGET
from softlabels.store.inspect import ECE_BINS, MAX_DENSE_ELEMENTS, QualityTotals, entropy
from softlabels.store.reader import LabelStore, open_store

NEAR_UNIFORM_SHARE = 0.9
FAILURE_MODE = (
    "nearly uniform labels teach little (measured on CIFAR-10: a 1-epoch teacher at T=4 had mean "
    "entropy 2.11 of 2.30 nats and its students lost to hard labels); prefer a lower temperature or "
    "a stronger teacher"
)


def check_same_data(stores: Sequence[LabelStore], purpose: str) -> None:
    """Refuse stores that do not label the same data, naming every difference from the first one.

    Raises:
        StoreMismatchError: a store's data identity (split, rows, classes, fingerprint,
            preprocessing) differs from the first store's.
    """
    first = stores[0]
    want = store_identity(first.header, Scope.DATA)
    for store in stores[1:]:
        found = mismatches(
            store_identity(store.header, Scope.DATA), want, have_name=store.location, want_name=first.location
        )
        if found:
            raise StoreMismatchError(
                f"{purpose} must label the same data; {store.location} differs from {first.location} "
                f"({'; '.join(found)})"
            )
        if store.layout.label_axes != first.layout.label_axes:
            raise StoreMismatchError(
                f"{purpose} must have the same label axes; {store.location} has views {store.layout.views} "
                f"and positions {store.layout.positions}, {first.location} has views {first.layout.views} "
                f"and positions {first.layout.positions}"
            )


def compare_stores(
    locations: Sequence[str | os.PathLike[str]],
    *,
    temperatures: Sequence[float] = ADVISORY_TEMPERATURES,
    bins: int = ECE_BINS,
) -> dict[str, Any]:
    """Quality, pairwise top-1 agreement and a temperature advisory of complete stores of the same data.

    Args:
        locations: one or more stores (any formats and temperatures).
        temperatures: candidate temperatures of the advisory (full stores; the stored T is added).
        bins: equal-width confidence bins of the expected calibration error.

    Raises:
        InvalidArgumentError: no stores, ``bins < 1`` or a candidate temperature that is not > 0.
        StoreMismatchError: the stores label different data.
        IncompleteStoreError: a store has unwritten shards.
    """
    if not locations:
        raise InvalidArgumentError("compare needs at least one store")
    if bins < 1:
        raise InvalidArgumentError(f"bins must be >= 1, got {bins}")
    for candidate in temperatures:
        if not math.isfinite(candidate) or candidate <= 0:
            raise InvalidSettingError(
                "temperatures", f"advisory temperatures must be finite numbers > 0, got {candidate:g}"
            )
    stores = [open_store(location) for location in locations]
    check_same_data(stores, "compared stores")
    measured = [_measure(store, temperatures, bins) for store in stores]
    reports = [report for report, _ in measured]
    agreement = [
        {
            "a": first.location,
            "b": second.location,
            "top1_agreement": _agreement(measured[i][1], measured[j][1]),
        }
        for (i, first), (j, second) in itertools.combinations(enumerate(stores), 2)
    ]
    warnings = [warning for report in reports for warning in report["warnings"]]
    by_nll = sorted(reports, key=lambda report: math.inf if report["nll"] is None else report["nll"])
    return {
        "num_rows": stores[0].num_rows,
        "num_classes": stores[0].num_classes,
        "uniform_entropy": math.log(stores[0].num_classes),
        "stores": reports,
        "agreement": agreement,
        "ranking_by_nll": [report["location"] for report in by_nll],
        "warnings": warnings,
        "failure_mode": FAILURE_MODE if warnings else None,
    }


def _measure(store: LabelStore, candidates: Sequence[float], bins: int) -> tuple[dict[str, Any], np.ndarray]:
    """One store's report and its most probable class per row (for the agreement)."""
    full = store.layout.encoding == "full"
    stored = store.temperature
    temperatures = sorted({*candidates, stored}) if full else [stored]
    totals = QualityTotals(bins)
    nll = 0.0
    entropy_sums = dict.fromkeys(temperatures, 0.0)
    top_sums = dict.fromkeys(temperatures, 0.0)
    cells = store.layout.cells_per_row
    predicted = np.full(store.num_rows * cells, UNLABELLED, dtype=np.int32)
    step = max(1, MAX_DENSE_ELEMENTS // store.num_classes)
    encoding = row_encoding(store.encoding)
    for chunk in map(store.read_chunk, range(store.num_chunks)):
        chunk_fields = flatten_cells(store.encoding, chunk.fields)
        chunk_targets = cell_targets(store.layout, chunk.targets)
        for begin in range(0, len(chunk_targets), step):
            part = _labelled(chunk_targets, begin, step, store.layout.positions is not None)
            if part is None:
                continue
            fields = {name: values[part] for name, values in chunk_fields.items()}
            targets = chunk_targets[part]
            if full:
                logits = fields["logits"].astype(np.float64) * stored  # the teacher's logits: T=1
                probs = softmax(logits)
                nll += float((logsumexp(logits) - logits[np.arange(len(logits)), targets]).sum())
                distributions = {t: softmax(logits / t) for t in temperatures}
            else:
                probs = encoding.reconstruct(fields, store.num_classes)
                with np.errstate(divide="ignore"):
                    nll -= float(np.log(probs[np.arange(len(probs)), targets]).sum())
                distributions = {stored: probs}
            first = chunk.start * cells
            predicted[first + np.arange(len(chunk_targets))[part]] = totals.add_distribution(probs, targets)
            for t, distribution in distributions.items():
                entropy_sums[t] += float(entropy(distribution).sum())
                top_sums[t] += float(distribution.max(axis=1).sum())
    teacher = totals.teacher()
    rows = max(1, totals.rows)
    uniform = math.log(store.num_classes)
    advisory = [
        {
            "temperature": t,
            "mean_entropy": entropy_sums[t] / rows,
            "mean_top_probability": top_sums[t] / rows,
            "near_uniform": entropy_sums[t] / rows > NEAR_UNIFORM_SHARE * uniform,
        }
        for t in temperatures
    ]
    measured_at = 1.0 if full else stored
    report = {
        "location": store.location,
        "teacher": store.provenance.teacher.spec,
        "encoding": store.layout.encoding,
        "temperature": stored,
        "accuracy": teacher["accuracy"],
        "nll": nll / rows if math.isfinite(nll) else None,
        "nll_temperature": measured_at,
        "ece": teacher["ece"],
        "ece_temperature": measured_at,
        "ece_bins": bins,
        "mean_entropy": entropy_sums[stored] / rows,
        "advisory": advisory,
        "warnings": _warnings(store.location, stored, advisory, uniform),
        "note": None
        if full
        else f"{store.layout.encoding} store: NLL and ECE are of the reconstructed distribution at the stored "
        f"T={stored:g} (compact rows cannot be re-tempered to T=1)",
    }
    return report, predicted


UNLABELLED = -1  # the predicted class of an ignored position: never counted in the agreement


def _labelled(targets: np.ndarray, begin: int, step: int, has_positions: bool) -> slice | np.ndarray | None:
    """The cells of ``targets[begin : begin + step]`` that carry a label, or None when none does."""
    part = slice(begin, begin + step)
    if not has_positions:
        return part
    labelled = targets[part] != IGNORED_TARGET
    if labelled.all():
        return part
    return np.flatnonzero(labelled) + begin if labelled.any() else None


def _agreement(first: np.ndarray, second: np.ndarray) -> float:
    """The share of cells labelled in both whose most probable classes agree."""
    both = (first != UNLABELLED) & (second != UNLABELLED)
    return float(np.mean(first[both] == second[both])) if both.any() else 0.0


def _warnings(location: str, stored: float, advisory: list[dict[str, Any]], uniform: float) -> list[str]:
    flat = [entry for entry in advisory if entry["near_uniform"]]
    if not flat:
        return []
    listed = ", ".join(f"T={entry['temperature']:g} ({entry['mean_entropy']:.2f} nats)" for entry in flat)
    at_stored = any(entry["temperature"] == stored for entry in flat)
    stored_note = (
        f"; T={stored:g} is the stored temperature: students are taught these labels" if at_stored else ""
    )
    return [
        f"{location} is nearly uniform at {listed}, above {NEAR_UNIFORM_SHARE:.0%} of log C = {uniform:.2f} "
        f"nats{stored_note}"
    ]


def format_comparison(report: dict[str, Any]) -> str:
    """Human-readable lines for ``compare`` without ``--json``."""
    stores = report["stores"]
    names = [entry["location"] for entry in stores]
    width = max(len("store"), *(len(name) for name in names))
    teacher_width = max(len("teacher"), *(len(entry["teacher"]) for entry in stores))
    lines = [
        f"{len(stores)} store(s) of the same data: {report['num_rows']} samples x {report['num_classes']} classes "
        f"(uniform entropy log C = {report['uniform_entropy']:.2f} nats)",
        "",
        f"{'store':<{width}}  {'teacher':<{teacher_width}}  {'format':<7}  {'T':>4}  {'accuracy':>8}  "
        f"{'NLL':>8}  {'ECE':>6}  {'entropy at T':>12}",
    ]
    for entry in stores:
        nll = "inf" if entry["nll"] is None else f"{entry['nll']:.4f}"
        marker = "" if entry["nll_temperature"] == 1.0 else "*"
        lines.append(
            f"{entry['location']:<{width}}  {entry['teacher']:<{teacher_width}}  {entry['encoding']:<7}  "
            f"{entry['temperature']:>4g}  {entry['accuracy']:>8.2%}  {nll + marker:>8}  "
            f"{entry['ece']:>6.4f}{marker:<1}  {entry['mean_entropy']:>12.4f}"
        )
    compact = any(entry["nll_temperature"] != 1.0 for entry in stores)
    lines.append(
        "NLL and ECE at T=1"
        + (" (* at the stored T: a compact store cannot be re-tempered)" if compact else "")
    )
    if len(stores) > 1:
        lines += ["", f"ranking by NLL: {', '.join(report['ranking_by_nll'])}", "", "top-1 agreement"]
        lines += [
            f"  {pair['a']:<{width}}  {pair['b']:<{width}}  {pair['top1_agreement']:>7.2%}"
            for pair in report["agreement"]
        ]
    lines += ["", "temperature advisory (mean entropy in nats / mean top probability; ! nearly uniform)"]
    for entry in stores:
        cells = "  ".join(
            f"T={point['temperature']:g}: {point['mean_entropy']:.2f}/{point['mean_top_probability']:.2f}"
            + ("!" if point["near_uniform"] else "")
            for point in entry["advisory"]
        )
        lines.append(f"  {entry['location']:<{width}}  {cells}")
    lines += [f"warning: {warning}" for warning in report["warnings"]]
    if report["failure_mode"]:
        lines.append(f"note: {report['failure_mode']}")
    lines += [f"note: {entry['note']}" for entry in stores if entry["note"]]
    return "\n".join(lines)
