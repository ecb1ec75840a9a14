"""What a store costs and what it keeps (``softlabels inspect``), to choose a temperature and a format.

Every metric is computed from the teacher distribution the store stands for,
:meth:`Encoding.reconstruct` (``full``: the softmax of the stored rows; ``topk``: the exact kept
probabilities with the residual mass spread uniformly over the other classes; ``sampled``: the
empirical distribution ``counts / S``), read a block of chunks at a time so that any store fits
in memory:

* size: bytes on disk per sample, and the compression ratio against float32 full logits
  (``4 * C`` bytes per sample);
* teacher quality against the stored targets: accuracy of the most probable class, mean
  entropy (nats), expected calibration error (equal-width confidence bins, Guo et al. 2017);
* against a full reference store of the same teacher, data and temperature: mean
  ``KL(full || reconstructed)`` (infinite when the reconstruction gives zero mass to a class
  the teacher does not, as sampled rows always can), top-1 agreement, the reference
  probability mass of the classes the store keeps, and the mean total-variation distance.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr

from softlabels.errors import InvalidArgumentError, StoreFormatError, StoreMismatchError
from softlabels.format.encodings import Encoding, cell_targets, flatten_cells, row_encoding
from softlabels.format.identity import Scope, mismatches, store_identity
from softlabels.format.schema import IGNORED_TARGET
from softlabels.store.reader import LabelStore, open_store

ECE_BINS = 15
FP32_BYTES = 4
# Dense [rows, C] float64 work arrays are cut to about this many elements (32 MiB each).
MAX_DENSE_ELEMENTS = 1 << 22
# Blocks span both stores' chunks when their lengths are compatible, up to this many rows and
# (decoded float32 reference rows: a token store's sample holds L x C logits) this many bytes.
MAX_BLOCK_ROWS = 1 << 16
MAX_BLOCK_BYTES = 1 << 28
_NOTES = {
    "topk": "top-k: classes not kept share the residual mass uniformly",
    "sampled": "sampled: accuracy, entropy and ECE are of the empirical distribution counts/S (entropy is "
    "biased low); KL to a reference is infinite whenever a class with mass was not drawn",
}


def inspect_store(
    location: str | os.PathLike[str], reference: str | os.PathLike[str] | None = None, *, bins: int = ECE_BINS
) -> dict[str, Any]:
    """Size, teacher quality and (with ``reference``) fidelity of a complete store, as JSON-ready data.

    Args:
        location: the store to inspect (any format).
        reference: a complete ``full`` store of the same teacher, data and temperature.
        bins: equal-width confidence bins of the expected calibration error.

    Raises:
        InvalidArgumentError: ``bins < 1`` or the reference is not a full store.
        StoreMismatchError: the reference holds other rows, another teacher or another temperature.
        IncompleteStoreError: either store has unwritten shards.
    """
    if bins < 1:
        raise InvalidArgumentError(f"bins must be >= 1, got {bins}")
    store = open_store(location)
    full = open_store(reference) if reference is not None else None
    if full is not None:
        _check_reference(store, full)
    totals = QualityTotals(bins)
    # Every figure is over label cells (one per sample, or per view and position), a block at a time.
    step = max(1, MAX_DENSE_ELEMENTS // store.num_classes)
    cells = row_encoding(store.encoding)
    for start, stop in _blocks(store, full):
        chunk = store.read_rows(start, stop)
        fields = flatten_cells(store.encoding, chunk.fields)
        targets = cell_targets(store.layout, chunk.targets)
        reference_fields = (
            None if full is None else flatten_cells(full.encoding, full.read_rows(start, stop).fields)
        )
        labelled = _labelled_cells(store, start, stop, targets)
        for begin in range(0, len(targets), step):
            part = labelled[begin : begin + step]
            if not part.any():
                continue
            rows = slice(begin, begin + step) if part.all() else np.flatnonzero(part) + begin
            reference_probs = (
                None
                if full is None or reference_fields is None
                else row_encoding(full.encoding).reconstruct(
                    _rows_of(reference_fields, rows), full.num_classes
                )
            )
            totals.add(cells, _rows_of(fields, rows), store.num_classes, targets[rows], reference_probs)
    size = _size(store)
    return {
        "location": store.location,
        "encoding": store.layout.encoding,
        "encoding_params": store.layout.encoding_params,
        "num_rows": store.num_rows,
        "num_classes": store.num_classes,
        "temperature": store.temperature,
        "size": size,
        "teacher": totals.teacher(),
        "positions": _position_figures(store, size, totals),
        "reference": None if full is None else {"location": full.location, **totals.fidelity()},
        "note": _NOTES.get(store.layout.encoding),
    }


def _labelled_cells(store: LabelStore, start: int, stop: int, targets: np.ndarray) -> np.ndarray:
    """Which cells of rows ``[start, stop)`` carry a label: answered rows, and positions not ignored.

    Private labels: rows without an answer hold no label. Token stores: a position whose target is
    ignored (padding, no next token) holds whatever the teacher produced there, never a label.
    """
    labelled = np.repeat(store.answered[start:stop], store.layout.cells_per_row)
    if store.layout.positions is not None:
        labelled &= targets != IGNORED_TARGET
    return labelled


def _position_figures(
    store: LabelStore, size: dict[str, Any], totals: QualityTotals
) -> dict[str, Any] | None:
    """Per-position figures of a token store (None for stores without positions).

    A token is a labelled position (its target not ignored) of any view; bytes per token divide
    the store's bytes by those, so ignored positions' cells count as cost.
    """
    if store.layout.positions is None:
        return None
    tokens = totals.rows
    on_disk = size["bytes_per_sample"]
    label_bytes = size["label_bytes_per_sample"] * store.num_rows
    return {
        "positions_per_sample": store.layout.positions,
        "labelled_positions": tokens,
        "ignored_positions": store.num_rows * store.layout.cells_per_row - tokens,
        "label_bytes_per_token": label_bytes / tokens if tokens else None,
        "bytes_per_token": on_disk * store.num_rows / tokens if tokens and on_disk is not None else None,
        "kept_mass": totals.stored_mass / max(1, tokens),
        "top1_agreement_with_targets": totals.correct / max(1, tokens),
    }


def _rows_of(fields: dict[str, np.ndarray], rows: slice | np.ndarray) -> dict[str, np.ndarray]:
    return {name: values[rows] for name, values in fields.items()}


def _check_reference(store: LabelStore, full: LabelStore) -> None:
    if full.layout.encoding != "full":
        raise InvalidArgumentError(
            f"the reference {full.location} holds {full.layout.encoding} labels; "
            "a reference must be a full store"
        )
    # The same data labelled by the same teacher (weights and parameters) at the same temperature.
    found = mismatches(
        store_identity(store.header, Scope.LABELS),
        store_identity(full.header, Scope.LABELS),
        have_name="store",
        want_name="reference",
    )
    if found:
        raise StoreMismatchError(
            f"{full.location} is not a reference for {store.location} ({'; '.join(found)})"
        )


def _blocks(store: LabelStore, full: LabelStore | None) -> list[tuple[int, int]]:
    """Row ranges covering whole chunks of both stores where possible, so no chunk is decoded twice."""
    rows = store.layout.chunk_rows
    if full is not None:
        common = math.lcm(rows, full.layout.chunk_rows)
        rows = common if common <= max(MAX_BLOCK_ROWS, rows) else rows
        sample_bytes = FP32_BYTES * full.num_classes * full.layout.cells_per_row
        fitting = max(full.layout.chunk_rows, MAX_BLOCK_BYTES // sample_bytes)
        rows = min(rows, fitting)  # long samples: memory first, even if a chunk is then decoded twice
    return [(start, min(start + rows, store.num_rows)) for start in range(0, store.num_rows, rows)]


def _size(store: LabelStore) -> dict[str, Any]:
    label_arrays = [spec.name for spec in store.encoding.fields(store.num_classes)]
    label_bytes = stored_bytes(store.location, label_arrays)
    total = store.bytes_on_disk()
    rows = max(1, store.num_rows)
    fp32 = FP32_BYTES * store.num_classes * store.layout.cells_per_row
    label_per_sample = label_bytes / rows
    return {
        "bytes_per_sample": None if total is None else total / rows,
        "label_bytes_per_sample": label_per_sample,
        "uncompressed_label_bytes_per_sample": store.encoding.bytes_per_row(store.num_classes),
        "fp32_full_bytes_per_sample": fp32,
        "compression_ratio": fp32 / label_per_sample if label_per_sample > 0 else None,
    }


def stored_bytes(location: str, arrays: list[str]) -> int:
    """Bytes the named arrays of the Zarr group at ``location`` occupy (compressed, with metadata)."""
    group = zarr.open_group(location, mode="r")
    total = 0
    for name in arrays:
        array = group[name]
        if not isinstance(array, zarr.Array):
            raise StoreFormatError(f"{location}/{name} is a group, not an array; the store is damaged")
        total += int(array.nbytes_stored())
    return total


@dataclass
class QualityTotals:
    """Running sums over rows, so the metrics need one pass over the store (``compare`` uses them too)."""

    bins: int
    rows: int = 0
    correct: float = 0.0
    entropy: float = 0.0
    confidence: float = 0.0
    stored_mass: float = 0.0  # mass the reconstruction puts on stored classes (top-k: the kept mass)
    kl: float = 0.0
    agree: float = 0.0
    kept_mass: float = 0.0
    total_variation: float = 0.0
    bin_rows: np.ndarray = field(init=False)
    bin_confidence: np.ndarray = field(init=False)
    bin_correct: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.bin_rows = np.zeros(self.bins, dtype=np.int64)
        self.bin_confidence = np.zeros(self.bins, dtype=np.float64)
        self.bin_correct = np.zeros(self.bins, dtype=np.float64)

    def add(
        self,
        encoding: Encoding,
        fields: dict[str, np.ndarray],
        num_classes: int,
        targets: np.ndarray,
        reference: np.ndarray | None,
    ) -> None:
        probs = encoding.reconstruct(fields, num_classes)
        predicted = self.add_distribution(probs, targets)
        kept = encoding.stored_classes(fields, num_classes)
        self.stored_mass += float(np.where(kept, probs, 0.0).sum())
        if reference is not None:
            self.kl += float(kl_divergence(reference, probs).sum())
            self.agree += float((reference.argmax(axis=1) == predicted).sum())
            self.kept_mass += float(np.where(kept, reference, 0.0).sum())
            self.total_variation += float(0.5 * np.abs(reference - probs).sum())

    def add_distribution(self, probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Count teacher rows ``probs`` (float64 ``[n, C]``) against ``targets``; returns the predicted classes."""
        predicted: np.ndarray = probs.argmax(axis=1)
        confidence = probs.max(axis=1)
        correct = (predicted == targets).astype(np.float64)
        self.rows += len(probs)
        self.correct += float(correct.sum())
        self.entropy += float(entropy(probs).sum())
        self.confidence += float(confidence.sum())
        slot = np.clip(np.ceil(confidence * self.bins).astype(np.int64) - 1, 0, self.bins - 1)
        self.bin_rows += np.bincount(slot, minlength=self.bins)
        self.bin_confidence += np.bincount(slot, weights=confidence, minlength=self.bins)
        self.bin_correct += np.bincount(slot, weights=correct, minlength=self.bins)
        return predicted

    def teacher(self) -> dict[str, Any]:
        rows = max(1, self.rows)
        gaps = np.abs(self.bin_correct - self.bin_confidence)  # per bin: rows * |accuracy - confidence|
        return {
            "accuracy": self.correct / rows,
            "mean_entropy": self.entropy / rows,
            "mean_confidence": self.confidence / rows,
            "ece": float(gaps.sum()) / rows,
            "ece_bins": self.bins,
        }

    def fidelity(self) -> dict[str, Any]:
        rows = max(1, self.rows)
        return {
            "mean_kl": self.kl / rows if math.isfinite(self.kl) else None,
            "top1_agreement": self.agree / rows,
            "kept_mass": self.kept_mass / rows,
            "total_variation": self.total_variation / rows,
        }


def entropy(probs: np.ndarray) -> np.ndarray:
    """Row entropies in nats (``0 log 0 = 0``)."""
    safe = np.where(probs > 0, probs, 1.0)
    result: np.ndarray = -(probs * np.log(safe)).sum(axis=1)
    return result


def kl_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Row-wise ``KL(p || q)`` in nats; ``inf`` where ``q`` is 0 and ``p`` is not."""
    positive = p > 0
    with np.errstate(divide="ignore"):
        log_ratio = np.log(np.where(positive, p, 1.0)) - np.log(np.where(positive, q, 1.0))
    result: np.ndarray = np.where(positive, p * log_ratio, 0.0).sum(axis=1)
    return result


def format_inspection(report: dict[str, Any]) -> str:
    """Human-readable lines for ``inspect`` without ``--json``."""
    size, teacher = report["size"], report["teacher"]
    on_disk = size["bytes_per_sample"]
    ratio = size["compression_ratio"]
    lines = [
        f"store        {report['location']}",
        f"format       {report['encoding']} {report['encoding_params']}, "
        f"temperature {report['temperature']}, {report['num_rows']} samples x {report['num_classes']} "
        "classes",
        f"size         {'unknown' if on_disk is None else f'{on_disk:.1f}'} B/sample on disk; labels "
        f"{size['label_bytes_per_sample']:.1f} B/sample ({size['uncompressed_label_bytes_per_sample']} "
        f"uncompressed)",
        f"compression  {'n/a' if ratio is None else f'{ratio:.1f}x'} smaller than float32 full logits "
        f"({size['fp32_full_bytes_per_sample']} B/sample)",
        # A sampled store holds draws from the teacher, so its figures describe the drawn sample.
        f"{'drawn sample' if report['encoding'] == 'sampled' else 'teacher':<12} "
        f"accuracy {teacher['accuracy']:.2%}, mean entropy {teacher['mean_entropy']:.4f} nats, "
        f"mean confidence {teacher['mean_confidence']:.4f}, "
        f"ECE {teacher['ece']:.4f} ({teacher['ece_bins']} bins)",
    ]
    fidelity = report["reference"]
    if fidelity is not None:
        kl = "infinite" if fidelity["mean_kl"] is None else f"{fidelity['mean_kl']:.6f} nats"
        lines += [
            f"reference    {fidelity['location']}",
            f"fidelity     mean KL(full || reconstructed) {kl}, "
            f"top-1 agreement {fidelity['top1_agreement']:.2%}, kept mass {fidelity['kept_mass']:.4f}, "
            f"total variation {fidelity['total_variation']:.4f}",
        ]
    positions = report.get("positions")
    if positions is not None:
        lines.append(_format_positions(positions))
    if report["note"]:
        lines.append(f"note         {report['note']}")
    return "\n".join(lines)


def _format_positions(positions: dict[str, Any]) -> str:
    """The per-position line of a token store."""

    def per_token(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1f}"

    return (
        f"per token    {per_token(positions['label_bytes_per_token'])} label B/token "
        f"({per_token(positions['bytes_per_token'])} B/token on disk) over "
        f"{positions['labelled_positions']:,} labelled positions ({positions['ignored_positions']:,} ignored, "
        f"{positions['positions_per_sample']} per sample); kept mass {positions['kept_mass']:.4f}, "
        f"top-1 agreement with targets {positions['top1_agreement_with_targets']:.2%}"
    )
