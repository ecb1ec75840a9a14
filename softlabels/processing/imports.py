"""Labels of a served or foreign teacher into a store (``softlabels import``).

Teams whose teacher sits behind an inference server get log-probabilities, not a model. This
module turns such a file into a store bound to the data it labels, written like every other store
(through :class:`~softlabels.store.StoreWriter`: the store lock, a run id, shard by shard, resumable).

Sources, read whole into memory:

``.npy`` / ``.npz``
    A float ``[N, C]`` array, one row per sample in sample order (an ``.npz`` holds it as ``logits``
    or as its only array). What the rows hold is stated (``kind``):

    * ``logits``: the teacher's logits; stored as ``logits / T`` (as ``generate`` stores them);
    * ``scaled-logits``: logits already divided by ``T``, stored as they are (what ``export``
      writes for a full store, so an export imports back to the same rows bit for bit);
    * ``logprobs``: log-probabilities of the teacher distribution at ``T``; each row must
      normalise: ``|sum(exp(row)) - 1| <= NORMALISATION_TOLERANCE``; stored as they are (their
      softmax is that distribution).

    An ``.npz`` that also holds ``targets`` (an export) must agree with the data's labels row for
    row, which proves that its rows line up with the samples.
``.jsonl`` (JSON Lines)
    One record per sample, in sample order, each a JSON object
    ``{"logprobs": [{"<class id>": <log-probability>, ...}]}`` holding the top log-probabilities of
    the teacher distribution at ``T`` per position, keyed by class id (a decimal integer string, as
    OpenAI-compatible servers key ``top_logprobs`` by token id). A record may carry ``"index"``, which
    must equal its position in the file. This store holds one label per sample, so each record holds
    exactly one position (sequence labels are not supported yet). Every record must hold at least
    ``k`` classes (the ``k`` most probable are kept; ``k`` defaults to the first record's count) and
    a kept mass of at most ``1 + NORMALISATION_TOLERANCE`` (a mass above 1 within it is scaled down
    to 1). They become a ``topk`` store whose ``log_normalizer`` is 0 (the teacher's logits are not
    known; the kept log-probabilities stand for them).

Every source is refused, before anything is written, when it holds a NaN or infinite value, a row
count other than the data's, a width other than its class count, class ids outside ``[0, C)``, or
log-probabilities that do not normalise. The store's provenance records that the labels were
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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from softlabels import __version__
from softlabels.defaults import CHUNKS_PER_SHARD, IMPORT_KINDS
from softlabels.errors import DataError, Interrupted, InvalidArgumentError, InvalidSettingError
from softlabels.format.encoding_spec import EncodingSpec
from softlabels.format.encodings import Encoding, index_dtype
from softlabels.format.encodings.values import encode_log_probs
from softlabels.format.identity import DescribedData, dataset_info
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

    ``rows`` (float32 ``[N, C]``) are rows whose softmax is the teacher distribution at ``T``;
    ``kept`` (JSON Lines) are the top log-probabilities (float64 ``[N, K]``, decreasing) and their
    classes (int64 ``[N, K]``). ``targets`` are an export file's labels, to check against the data.
    """

    path: str
    sha256: str
    kind: str
    rows: np.ndarray | None = None
    kept: tuple[np.ndarray, np.ndarray] | None = None
    targets: np.ndarray | None = None

    @property
    def num_rows(self) -> int:
        return len(self.rows) if self.rows is not None else len(self.kept_rows()[0])

    @property
    def k(self) -> int | None:
        """Classes per record of a JSON Lines source (None for arrays)."""
        return self.kept_rows()[0].shape[1] if self.kept is not None else None

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
        k: classes kept per JSON Lines record (default: the first record's count).

    Raises:
        InvalidArgumentError: an unknown suffix or kind, or a bad temperature.
        DataError: the file cannot be read, or holds NaN or infinite values, the wrong shape, more
            than one position per record, positions out of order, or log-probabilities that do not
            normalise.
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
        return ImportSource(str(source), _sha256(source), TOPK_LOGPROBS, kept=_read_jsonl(source, k))
    if kind not in IMPORT_KINDS:
        raise InvalidArgumentError(
            f"kind of the rows in {source} must be one of {', '.join(IMPORT_KINDS)}, got {kind}"
        )
    if k is not None:
        raise InvalidSettingError("k", f"k applies to .jsonl sources only; {source} holds whole rows")
    values, targets = _read_array(source)
    rows = _checked_rows(values, kind, source)
    if kind == "logits":
        rows = rows / np.float32(temperature)  # in float32, as generate divides the teacher's outputs
    return ImportSource(str(source), _sha256(source), kind, rows=rows, targets=targets)


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
    if values.ndim == 3:
        raise DataError(
            f"{path} holds labels per position {list(values.shape)}; this store holds one label row per "
            "sample ([N, C]); sequence labels are not supported yet"
        )
    if values.ndim != 2 or values.shape[0] == 0 or values.shape[1] < 2:
        raise DataError(
            f"{path} must hold one row per sample, [N, C] with C >= 2; got shape {list(values.shape)}"
        )
    if not np.issubdtype(values.dtype, np.floating):
        raise DataError(f"{path} holds {values.dtype} values; {kind} must be floating-point numbers")
    rows = values.astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(rows).all(axis=1))
    if bad.size:
        raise DataError(
            f"{path} holds NaN or infinite values in {bad.size} rows, e.g. rows {bad[:SHOWN].tolist()}"
        )
    if kind == "logprobs":
        mass = np.exp(rows.astype(np.float64)).sum(axis=1)
        off = np.flatnonzero(np.abs(mass - 1.0) > NORMALISATION_TOLERANCE)
        if off.size:
            raise DataError(
                f"{path}: the log-probabilities of {off.size} rows do not normalise (probabilities sum to "
                f"{mass[off[0]]:.6g} in row {off[0]}; allowed: 1 +/- {NORMALISATION_TOLERANCE:g})"
            )
    return rows


def _read_jsonl(path: Path, k: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Top log-probabilities (decreasing; ties by class) and their classes, ``k`` per record."""
    records: list[tuple[np.ndarray, np.ndarray]] = []
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
    width = len(records[0][0]) if k is None else k
    if width < 1:
        raise InvalidSettingError("k", f"k must be >= 1, got {width}")
    short = [number for number, (values, _) in enumerate(records) if len(values) < width]
    if short:
        raise DataError(
            f"{path}: {len(short)} records hold fewer than k = {width} classes, e.g. records {short[:SHOWN]}"
        )
    values = np.stack([record[0][:width] for record in records])
    classes = np.stack([record[1][:width] for record in records])
    mass = np.exp(values).sum(axis=1)
    over = np.flatnonzero(mass > 1 + NORMALISATION_TOLERANCE)
    if over.size:
        raise DataError(
            f"{path}: the kept log-probabilities of {over.size} records do not normalise (probabilities sum "
            f"to {mass[over[0]]:.6g} in record {over[0]}; allowed: at most 1 + {NORMALISATION_TOLERANCE:g})"
        )
    # Within the tolerance: scale the kept mass down to 1, so the residual is never negative.
    return values - np.log(np.maximum(mass, 1.0))[:, None], classes


def _parse_record(line: str, number: int, path: Path) -> tuple[np.ndarray, np.ndarray]:
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
    if len(positions) != 1:
        raise DataError(
            f"{where} holds {len(positions)} positions; this store holds one label per sample (exactly one "
            "position per record; sequence labels are not supported yet)"
        )
    return _parse_position(positions[0], where)


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
    chunk_rows: int | None = None,
    chunks_per_shard: int = CHUNKS_PER_SHARD,
    overwrite: bool = False,
    command: str | None = None,
) -> ImportSummary:
    """Write ``source``'s rows into a store for ``dataset [split]``, resumably.

    Raises:
        DataError: the rows do not match the data (count, classes, an export's targets).
        InvalidSettingError: a JSON Lines source into a format other than ``topk`` of its ``k``.
        StoreMismatchError: ``out`` holds a store made otherwise (another file, teacher, T, data) and
            ``overwrite`` is off.
        Interrupted: Ctrl-C; the shards written are kept, and the same call finishes the store.
    """
    started = time.perf_counter()
    _check_options(source, encoding, teacher_name, chunk_rows, chunks_per_shard)
    from softlabels.sources import load_dataset  # torch: once the source is known to be sound

    data = load_dataset(dataset, split, data_root=data_root)
    targets = np.array([data.dataset[i][1] for i in range(len(data))], dtype=np.int64)
    _check_fits(source, data, targets)
    row_encoding = encoding.build()
    header = _header(
        source, data, teacher_name, temperature, row_encoding, chunk_rows, chunks_per_shard, command
    )
    writer = StoreWriter.open(out, header, row_encoding, overwrite=overwrite)
    pending = writer.pending_shards()
    layout = writer.header.layout
    try:
        for shard in pending:
            start, stop = layout.shard_bounds(shard)
            writer.write_shard(
                shard, _encoded(source, row_encoding, layout, start, stop), targets[start:stop]
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


def _check_fits(source: ImportSource, data: DescribedData, targets: np.ndarray) -> None:
    """Refuse rows that do not match the data: their count, their width or classes, an export's targets."""
    described = f"{data.spec} [{data.split}]"
    if source.num_rows != len(data):
        raise DataError(
            f"{source.path} holds {source.num_rows} rows but {described} has {len(data)} samples; "
            "one row per sample, in sample order"
        )
    if source.rows is not None and source.rows.shape[1] != data.num_classes:
        raise DataError(
            f"{source.path} holds rows of {source.rows.shape[1]} classes but {described} has {data.num_classes}"
        )
    if source.kept is not None:
        outside = np.flatnonzero((source.kept[1] >= data.num_classes).any(axis=1))
        if outside.size:
            raise DataError(
                f"{source.path}: {outside.size} records name a class id >= {data.num_classes} (the classes of "
                f"{described}), e.g. records {outside[:SHOWN].tolist()}"
            )
    if source.targets is not None and not np.array_equal(np.asarray(source.targets, dtype=np.int64), targets):
        rows = np.flatnonzero(np.asarray(source.targets).reshape(-1)[: len(targets)] != targets)
        raise DataError(
            f"the rows of {source.path} do not line up with {described}: its targets differ from the data's "
            f"labels at rows {rows[:SHOWN].tolist()}"
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
) -> StoreHeader:
    rows_per_chunk = chunk_rows or default_chunk_rows(encoding.bytes_per_row(data.num_classes))
    layout = Layout(
        encoding=encoding.name,
        encoding_params=encoding.params(),
        num_rows=len(data),
        num_classes=data.num_classes,
        chunk_rows=rows_per_chunk,
        shard_rows=rows_per_chunk * chunks_per_shard,
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
    dtype = layout.encoding_params["dtype"]
    return {
        **encode_log_probs("values", values[start:stop], dtype, start),
        "indices": classes[start:stop].astype(index_dtype(layout.num_classes)),
        "log_normalizer": np.zeros(stop - start, dtype=np.float32),
    }
