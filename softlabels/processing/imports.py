"""Labels of a served or foreign teacher into a store (``softlabels import``).

Teams whose teacher sits behind an inference server get log-probabilities, not a model. This
module turns such a file into a store bound to the data it labels, written like every other store
(through :class:`~softlabels.store.StoreWriter`: the store lock, a run id, shard by shard, resumable).

Sources, read whole into memory:

``.npy`` / ``.npz``
    A float ``[N, C]`` array, one row per sample in sample order, or ``[N, L, C]``, one row per
    position of each sample of token data (a ``text:ROOT`` dataset read with ``seq_len = L``, or a
    plug-in whose targets are ``[L]``); an ``.npz`` holds it as ``logits`` or as its only array.
    What the rows hold is stated (``kind``):

    * ``logits``: the teacher's logits; stored as ``logits / T`` (as ``generate`` stores them);
    * ``scaled-logits``: logits already divided by ``T``, stored as they are (what ``export``
      writes for a full store, so an export imports back to the same rows bit for bit);
    * ``logprobs``: log-probabilities of the teacher distribution at ``T``; each row must
      normalise: ``|sum(exp(row)) - 1| <= NORMALISATION_TOLERANCE``; stored as they are (their
      softmax is that distribution). Positions the data ignores (target ``-100``) are stored but
      not checked.

    An ``.npz`` that also holds ``targets`` (an export) must agree with the data's labels row for
    row, which proves that its rows line up with the samples.
``.jsonl`` (JSON Lines)
    One record per sample, in sample order, each a JSON object
    ``{"logprobs": [{"<class id>": <log-probability>, ...}, ...]}`` holding the top log-probabilities
    of the teacher distribution at ``T`` per position, keyed by class id (a decimal integer string, as
    OpenAI-compatible servers key ``top_logprobs`` by token id). A record may carry ``"index"``, which
    must equal its position in the file. A record holds exactly one position for data with one label
    per sample, and exactly ``L`` (one per labelled position, in order) for token data of ``L``
    positions per sample. Every position must hold at least ``k`` classes (the ``k`` most probable are
    kept; ``k`` defaults to the first position's count) and a kept mass of at most
    ``1 + NORMALISATION_TOLERANCE`` (a mass above 1 within it is scaled down to 1; positions the data
    ignores are not checked). They become a ``topk`` store whose ``log_normalizer`` is 0 (the
    teacher's logits are not known; the kept log-probabilities stand for them).

Every source is refused, before anything is written, when it holds a NaN or infinite value, a row
count other than the data's, positions per sample other than the data's (none, or ``L``), a width
other than its class count, class ids outside ``[0, C)``, or log-probabilities that do not
normalise. The store's provenance records that the labels were
imported (``derived_from``: operation ``import``, the source file and its sha256, the kind) and the
stated teacher name and temperature; a resume must use the very same file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from softlabels import __version__
from softlabels.defaults import CHUNKS_PER_SHARD, IMPORT_KINDS
from softlabels.errors import DataError, Interrupted, InvalidArgumentError, InvalidSettingError
from softlabels.format.encoding_spec import EncodingSpec
from softlabels.format.encodings import Encoding, cell_encoding, index_dtype
from softlabels.format.encodings.values import encode_log_probs
from softlabels.format.identity import DescribedData, dataset_info
from softlabels.format.schema import IGNORED_TARGET
from softlabels.processing.shards import absolute_location
from softlabels.store import (
    Layout,
    Provenance,
    StoreHeader,
    StoreWriter,
    TeacherInfo,
    WriteSummary,
    default_chunk_rows,
)

IMPORT = "import"
NORMALISATION_TOLERANCE = 1e-3
"""How far a row's probability mass may be from 1 (log-probabilities) or above it (top-k)."""
TOPK_LOGPROBS = "topk-logprobs"
"""The kind of a JSON Lines source: top log-probabilities per position."""
ARRAY_SUFFIXES = (".npy", ".npz")
JSONL_SUFFIX = ".jsonl"
NPZ_ROWS = "logits"
NPZ_TARGETS = "targets"
SHOWN = 5


@dataclass(frozen=True)
class ImportSource:
    """A validated source file: the rows to store, without any dataset yet.

    ``rows`` (float32 ``[N, C]`` or ``[N, L, C]``) are rows whose softmax is the teacher
    distribution at ``T``; ``kept`` (JSON Lines) are the top log-probabilities (float64
    ``[N, P, K]``, decreasing) and their classes (int64 ``[N, P, K]``), ``P`` positions per record
    (``record_positions`` ``[N]`` says how many each record held; shorter records are padded with
    ``-inf``). ``mass`` (``[N, P]``, log-probability sources whose positions the data may ignore) is
    each position's probability mass, checked once the data's ignored positions are known.
    ``targets`` are an export file's labels, to check against the data.
    """

    path: str
    sha256: str
    kind: str
    rows: np.ndarray | None = None
    kept: tuple[np.ndarray, np.ndarray] | None = None
    record_positions: np.ndarray | None = None
    mass: np.ndarray | None = None
    targets: np.ndarray | None = None

    @property
    def num_rows(self) -> int:
        return len(self.rows) if self.rows is not None else len(self.kept_rows()[0])

    @property
    def k(self) -> int | None:
        """Classes per position of a JSON Lines source (None for arrays)."""
        return self.kept_rows()[0].shape[-1] if self.kept is not None else None

    def kept_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """``kept``, for a source known to hold top log-probabilities."""
        if self.kept is None:
            raise InvalidArgumentError(f"{self.path} holds full rows, not top log-probabilities")
        return self.kept


@dataclass(frozen=True)
class ImportSummary(WriteSummary):
    """What an import did."""

    source: str
    encoding: EncodingSpec

    def describe(self) -> str:
        return (
            f"Imported {self.source} into {self.out}: {self.encoding.describe()}, {self.describe_rows()}, "
            f"{self.seconds:.1f} s."
        )


def read_source(
    path: str | os.PathLike[str], kind: str | None, temperature: float, *, k: int | None = None
) -> ImportSource:
    """Read and check a source file (numpy only: no dataset, no torch).

    Args:
        path: a ``.npy``, ``.npz`` or ``.jsonl`` file.
        kind: what an array's rows hold, one of :data:`~softlabels.defaults.IMPORT_KINDS` (required
            for arrays; JSON Lines hold log-probabilities, so only ``logprobs`` or None is accepted).
        temperature: the temperature the labels are at (``logits`` are divided by it).
        k: classes kept per JSON Lines position (default: the first position's count).

    Raises:
        InvalidArgumentError: an unknown suffix or kind, or a bad temperature.
        DataError: the file cannot be read, or holds NaN or infinite values, the wrong shape, records
            out of order or without positions, or ``[N, C]`` log-probabilities that do not normalise
            (per-position ones, and positions per record, are checked against the data on import).
    """
    source = Path(path)
    if not (math.isfinite(temperature) and temperature > 0):
        raise InvalidArgumentError(f"temperature must be a positive number, got {temperature}")
    if source.suffix not in (*ARRAY_SUFFIXES, JSONL_SUFFIX):
        raise InvalidArgumentError(
            f"cannot import {source}: expected a .npy or .npz array or a .jsonl file of top log-probabilities"
        )
    if source.suffix == JSONL_SUFFIX:
        if kind not in (None, "logprobs"):
            raise InvalidArgumentError(
                f"kind {kind} does not apply to {source}: JSON Lines hold log-probabilities"
            )
        values, classes, counts, mass = _read_jsonl(source, k)
        return ImportSource(
            str(source),
            _sha256(source),
            TOPK_LOGPROBS,
            kept=(values, classes),
            record_positions=counts,
            mass=mass,
        )
    if kind not in IMPORT_KINDS:
        raise InvalidArgumentError(
            f"kind of the rows in {source} must be one of {', '.join(IMPORT_KINDS)}, got {kind}"
        )
    if k is not None:
        raise InvalidSettingError("k", f"k applies to .jsonl sources only; {source} holds whole rows")
    values, targets = _read_array(source)
    rows = _checked_rows(values, kind, source)
    # Per-position log-probabilities are checked once the data's ignored positions are known.
    per_position = kind == "logprobs" and rows.ndim == 3
    position_mass = np.exp(rows.astype(np.float64)).sum(axis=-1) if per_position else None
    if kind == "logits":
        rows = rows / np.float32(temperature)  # in float32, as generate divides the teacher's outputs
    return ImportSource(str(source), _sha256(source), kind, rows=rows, mass=position_mass, targets=targets)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_array(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    if isinstance(loaded, np.ndarray):
        return loaded, None
    with loaded:
        names = list(loaded.files)
        if NPZ_ROWS not in names and len(names) != 1:
            raise DataError(f"{path} holds the arrays {names}: name the rows '{NPZ_ROWS}' or keep one array")
        rows = loaded[NPZ_ROWS if NPZ_ROWS in names else names[0]]
        targets = loaded[NPZ_TARGETS] if NPZ_TARGETS in names and NPZ_ROWS in names else None
    return rows, targets


def _checked_rows(values: np.ndarray, kind: str, path: Path) -> np.ndarray:
    if values.ndim not in (2, 3) or 0 in values.shape[:-1] or values.shape[-1] < 2:
        raise DataError(
            f"{path} must hold one row per sample, [N, C], or per position, [N, L, C], with C >= 2; "
            f"got shape {list(values.shape)}"
        )
    if not np.issubdtype(values.dtype, np.floating):
        raise DataError(f"{path} holds {values.dtype} values; {kind} must be floating-point numbers")
    rows = values.astype(np.float32)
    finite = np.asarray(np.isfinite(rows).all(axis=-1))
    bad = np.flatnonzero(~finite.reshape(len(rows), -1).all(axis=1))
    if bad.size:
        raise DataError(
            f"{path} holds NaN or infinite values in {bad.size} rows, e.g. rows {bad[:SHOWN].tolist()}"
            + _positions_of(~finite, bad[0])
        )
    if kind == "logprobs" and rows.ndim == 2:
        mass = np.exp(rows.astype(np.float64)).sum(axis=1)
        off = np.flatnonzero(np.abs(mass - 1.0) > NORMALISATION_TOLERANCE)
        if off.size:
            raise DataError(
                f"{path}: the log-probabilities of {off.size} rows do not normalise (probabilities sum to "
                f"{mass[off[0]]:.6g} in row {off[0]}; allowed: 1 +/- {NORMALISATION_TOLERANCE:g})"
            )
    return rows


def _positions_of(cells: np.ndarray, row: int) -> str:
    """`` (positions [...] of row R)`` for per-position ``cells`` ``[N, L]``; nothing for ``[N]``."""
    if cells.ndim < 2:
        return ""
    return f" (positions {np.flatnonzero(cells[row])[:SHOWN].tolist()} of row {row})"


def _read_jsonl(path: Path, k: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Top log-probabilities ``[N, P, K]`` (decreasing; ties by class), their classes, the positions of
    each record ``[N]`` and each position's kept mass ``[N, P]`` (before it is scaled down to 1)."""
    records: list[list[tuple[np.ndarray, np.ndarray]]] = []
    try:
        with path.open() as stream:
            for number, line in enumerate(filter(str.strip, stream)):
                records.append(_parse_record(line, number, path))
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"cannot read {path}: it is not UTF-8 text") from exc
    if not records:
        raise DataError(f"{path} holds no records")
    width = len(records[0][0][0]) if k is None else k
    if width < 1:
        raise InvalidSettingError("k", f"k must be >= 1, got {width}")
    short = [number for number, record in enumerate(records) if any(len(v) < width for v, _ in record)]
    if short:
        raise DataError(
            f"{path}: {len(short)} records hold fewer than k = {width} classes at a position, "
            f"e.g. records {short[:SHOWN]}"
        )
    counts = np.array([len(record) for record in records], dtype=np.int64)
    values = np.full((len(records), int(counts.max()), width), -np.inf)
    classes = np.zeros(values.shape, dtype=np.int64)
    for number, record in enumerate(records):
        for position, (kept, ids) in enumerate(record):
            values[number, position], classes[number, position] = kept[:width], ids[:width]
    mass = np.exp(values).sum(axis=-1)
    # Within the tolerance: scale the kept mass down to 1, so the residual is never negative.
    return values - np.log(np.maximum(mass, 1.0))[..., None], classes, counts, mass


def _parse_record(line: str, number: int, path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    where = f"{path}: record {number}"
    try:
        record = json.loads(line)
    except ValueError as exc:
        raise DataError(f"{where} is not JSON ({exc})") from exc
    if not isinstance(record, dict) or not isinstance(record.get("logprobs"), list):
        raise DataError(
            f'{where} must be an object with "logprobs": [{{"<class id>": <log-probability>, ...}}]'
        )
    if "index" in record and record["index"] != number:
        raise DataError(
            f"{where} carries index {record['index']!r}: records must be in sample order, one per sample"
        )
    positions = record["logprobs"]
    if not positions:
        raise DataError(f"{where} holds no positions")
    return [
        _parse_position(position, f"{where}, position {index}") for index, position in enumerate(positions)
    ]


def _parse_position(position: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(position, dict) or not position:
        raise DataError(f'{where}: a position must be a non-empty object {{"<class id>": <log-probability>}}')
    classes, values = [], []
    for key, value in position.items():
        if not (isinstance(key, str) and key.isdecimal()):
            raise DataError(f"{where}: class id {key!r} is not a non-negative integer")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise DataError(f"{where}: the log-probability of class {key} is {value!r}, not a finite number")
        classes.append(int(key))
        values.append(float(value))
    order = np.lexsort((np.asarray(classes), -np.asarray(values)))  # decreasing value, ties by class
    return np.asarray(values, dtype=np.float64)[order], np.asarray(classes, dtype=np.int64)[order]


def import_labels(
    source: ImportSource,
    *,
    dataset: str,
    split: str,
    out: str | os.PathLike[str],
    teacher_name: str,
    temperature: float,
    encoding: EncodingSpec,
    data_root: str | None = None,
    seq_len: int | None = None,
    chunk_rows: int | None = None,
    chunks_per_shard: int = CHUNKS_PER_SHARD,
    overwrite: bool = False,
    command: str | None = None,
) -> ImportSummary:
    """Write ``source``'s rows into a store for ``dataset [split]``, resumably.

    Token data (``seq_len`` for ``text:ROOT``, or a plug-in with per-position targets) makes a store
    with ``L`` labelled positions per sample and ``[N, L]`` targets; ``source`` must then hold ``L``
    positions per sample.

    Raises:
        DataError: the rows do not match the data (count, positions, classes, an export's targets), or
            log-probabilities at positions the data labels do not normalise.
        InvalidSettingError: a JSON Lines source into a format other than ``topk`` of its ``k``.
        StoreMismatchError: ``out`` holds a store made otherwise (another file, teacher, T, data) and
            ``overwrite`` is off.
        Interrupted: Ctrl-C; the shards written are kept, and the same call finishes the store.
    """
    started = time.perf_counter()
    _check_options(source, encoding, teacher_name, chunk_rows, chunks_per_shard)
    from softlabels.sources import load_dataset  # torch: once the source is known to be sound

    data = load_dataset(dataset, split, data_root=data_root, seq_len=seq_len)
    targets = np.stack([np.asarray(data.dataset[i][1], dtype=np.int64) for i in range(len(data))])
    source = _fitted(source, data, data.positions, targets)
    header = _header(
        source,
        data,
        teacher_name,
        temperature,
        encoding.build(),
        chunk_rows,
        chunks_per_shard,
        command,
        data.positions,
    )
    writer = StoreWriter.open(out, header, encoding.build(), overwrite=overwrite)
    pending = writer.pending_shards()
    layout = writer.header.layout
    try:
        for shard in pending:
            start, stop = layout.shard_bounds(shard)
            writer.write_shard(
                shard, _encoded(source, writer.encoding, layout, start, stop), targets[start:stop]
            )
    except KeyboardInterrupt:
        kept = f"{layout.num_shards - len(writer.pending_shards())} of {layout.num_shards} shards in {writer.path}"
        raise Interrupted(f"interrupted: kept {kept}; re-run the same command to finish", kept) from None
    writer.mark_complete()
    return ImportSummary(
        out=str(writer.path),
        num_rows=layout.num_rows,
        num_classes=layout.num_classes,
        shards_total=layout.num_shards,
        shards_written=len(pending),
        bytes_on_disk=writer.bytes_on_disk(),
        seconds=time.perf_counter() - started,
        rows_written=sum(stop - start for start, stop in map(layout.shard_bounds, pending)),
        source=source.path,
        encoding=encoding,
    )


def _check_options(
    source: ImportSource,
    encoding: EncodingSpec,
    teacher_name: str,
    chunk_rows: int | None,
    chunks_per_shard: int,
) -> None:
    if not teacher_name.strip():
        raise InvalidArgumentError("teacher name must not be empty")
    if source.kept is not None and (encoding.format != "topk" or encoding.k != source.k):
        raise InvalidSettingError(
            "format",
            f"format {encoding.describe()} cannot hold {source.path}: its top log-probabilities import into "
            f"format topk with k = {source.k} (the rest of each distribution is unknown)",
        )
    for setting, value in (("chunk rows", chunk_rows), ("chunks per shard", chunks_per_shard)):
        if value is not None and value < 1:
            raise InvalidArgumentError(f"{setting} must be >= 1, got {value}")


def _fitted(
    source: ImportSource, data: DescribedData, positions: int | None, targets: np.ndarray
) -> ImportSource:
    """``source`` shaped as the data's samples, ``[N, C]`` or ``[N, L, ...]``, once it is known to fit."""
    _check_fits(source, data, positions, targets)
    if source.kept is None:
        return source
    values, classes = source.kept
    if positions is None:
        return replace(source, kept=(values[:, 0], classes[:, 0]))
    return replace(source, kept=(values[:, :positions], classes[:, :positions]))


def _check_fits(
    source: ImportSource, data: DescribedData, positions: int | None, targets: np.ndarray
) -> None:
    """Refuse rows that do not match the data: count, positions, width or classes, normalisation, targets."""
    described = f"{data.spec} [{data.split}]"
    if source.num_rows != len(data):
        raise DataError(
            f"{source.path} holds {source.num_rows} rows but {described} has {len(data)} samples; "
            "one row per sample, in sample order"
        )
    _check_positions(source, described, positions)
    if source.rows is not None and source.rows.shape[-1] != data.num_classes:
        raise DataError(
            f"{source.path} holds rows of {source.rows.shape[-1]} classes but {described} has {data.num_classes}"
        )
    _check_normalised(source, targets if positions is not None else None)
    if source.kept is not None:
        outside = np.flatnonzero((source.kept[1] >= data.num_classes).reshape(len(targets), -1).any(axis=1))
        if outside.size:
            raise DataError(
                f"{source.path}: {outside.size} records name a class id >= {data.num_classes} (the classes of "
                f"{described}), e.g. records {outside[:SHOWN].tolist()}"
            )
    if source.targets is not None and not np.array_equal(np.asarray(source.targets, dtype=np.int64), targets):
        stated = np.asarray(source.targets)
        differ = (
            (stated != targets).reshape(len(targets), -1).any(axis=1)
            if stated.shape == targets.shape
            else np.ones(len(targets), dtype=bool)
        )
        rows = np.flatnonzero(differ)
        raise DataError(
            f"the rows of {source.path} do not line up with {described}: its targets differ from the data's "
            f"labels at rows {rows[:SHOWN].tolist()}"
        )


def _check_positions(source: ImportSource, described: str, positions: int | None) -> None:
    """Refuse a source whose positions per sample (none, or ``L``) are not the data's."""
    expected = "one label per sample" if positions is None else f"{positions} labelled positions per sample"
    if source.rows is not None:
        held = None if source.rows.ndim == 2 else source.rows.shape[1]
        if held != positions:
            shape = "[N, C], one row per sample" if held is None else f"[N, L, C] with L = {held}"
            raise DataError(
                f"{source.path} holds {shape} but {described} has {expected}: positions that do not line up"
            )
        return
    counts = source.record_positions
    if counts is None:
        return
    bad = np.flatnonzero(counts != (positions or 1))
    if bad.size:
        raise DataError(
            f"{source.path}: record {bad[0]} holds {counts[bad[0]]} positions but {described} has {expected} "
            f"({bad.size} records differ, e.g. records {bad[:SHOWN].tolist()}): positions that do not line up"
        )


def _check_normalised(source: ImportSource, targets: np.ndarray | None) -> None:
    """Refuse log-probabilities whose mass is off at a position the data labels (per-position targets)."""
    if source.mass is None:
        return
    mass = source.mass[:, : 1 if targets is None else targets.shape[1]]
    if source.kept is not None:
        off = mass > 1 + NORMALISATION_TOLERANCE
        allowed, what, unit = f"at most 1 + {NORMALISATION_TOLERANCE:g}", "kept log-probabilities", "record"
    else:
        off = np.abs(mass - 1.0) > NORMALISATION_TOLERANCE
        allowed, what, unit = f"1 +/- {NORMALISATION_TOLERANCE:g}", "log-probabilities", "row"
    if targets is not None:
        off &= targets != IGNORED_TARGET  # an ignored position is stored, never trained on
    rows = np.flatnonzero(off.any(axis=1))
    if rows.size:
        row, position = rows[0], int(np.flatnonzero(off[rows[0]])[0])
        where = f"{unit} {row}" if targets is None else f"{unit} {row}, position {position}"
        raise DataError(
            f"{source.path}: the {what} of {rows.size} {unit}s do not normalise (probabilities sum to "
            f"{mass[row, position]:.6g} at {where}; allowed: {allowed}), e.g. {unit}s {rows[:SHOWN].tolist()}"
            + ("" if targets is None else _positions_of(off, row))
        )


def _header(
    source: ImportSource,
    data: DescribedData,
    teacher_name: str,
    temperature: float,
    encoding: Encoding,
    chunk_rows: int | None,
    chunks_per_shard: int,
    command: str | None,
    positions: int | None,
) -> StoreHeader:
    label_axes = () if positions is None else (positions,)
    # A token sample holds one row per position: chunks are sized by whole samples.
    rows_per_chunk = chunk_rows or default_chunk_rows(
        cell_encoding(encoding, label_axes).bytes_per_row(data.num_classes)
    )
    layout = Layout(
        encoding=encoding.name,
        encoding_params=encoding.params(),
        num_rows=len(data),
        num_classes=data.num_classes,
        chunk_rows=rows_per_chunk,
        shard_rows=rows_per_chunk * chunks_per_shard,
        positions=positions,
    )
    created = datetime.now(UTC).isoformat(timespec="seconds")
    record = {
        "operation": IMPORT,
        "source": absolute_location(source.path),
        "source_sha256": source.sha256,
        "source_kind": source.kind,
        "teacher_name": teacher_name,
        "temperature": float(temperature),
        "encoding": {"name": encoding.name, "params": encoding.params()},
        "created": created,
        "softlabels": __version__,
    }
    provenance = Provenance(
        # The teacher is only named: its weights never reached this machine.
        teacher=TeacherInfo(teacher_name, 0, None, None),
        dataset=dataset_info(data),
        temperature=float(temperature),
        precision="unknown",
        command=command or f"softlabels.import_labels({source.path!r})",
        config={"source": source.path, "kind": source.kind, "teacher_name": teacher_name},
        created=created,
        versions={"softlabels": __version__, "numpy": np.__version__, "python": platform.python_version()},
        derived_from=(record,),
    )
    return StoreHeader(layout=layout, provenance=provenance)


def _encoded(
    source: ImportSource, encoding: Encoding, layout: Layout, start: int, stop: int
) -> dict[str, np.ndarray]:
    if source.rows is not None:
        return encoding.encode(source.rows[start:stop], start)
    values, classes = source.kept_rows()
    cells, samples = layout.cells_per_row, (stop - start, *layout.label_axes)
    kept = values[start:stop].reshape(-1, values.shape[-1])  # one row per cell, keyed by flat cell index
    fields = {
        **encode_log_probs("values", kept, layout.encoding_params["dtype"], start * cells),
        "indices": classes[start:stop].reshape(kept.shape).astype(index_dtype(layout.num_classes)),
        "log_normalizer": np.zeros(len(kept), dtype=np.float32),
    }
    return {name: field.reshape(*samples, *field.shape[1:]) for name, field in fields.items()}
