"""Reading every chunk of a store and checking it (``softlabels verify``): a store shared across teams is
checked before anyone trains on it.

Every array the layout implies is opened and compared with it (shape, dtype, chunking, the crc32c
checksum codec); every chunk of every array is read whole (never row by row), so a chunk that fails
its checksum, cannot be decoded or is missing is named by its key (``logits/c/3/0``). Decoded rows
are checked against what their format promises (:func:`value_problems`); the shard records against
the header's run id; and, given the data, the store's data identity
(:func:`softlabels.format.identity.data_identity`). Every problem is collected: one damaged chunk
does not hide the next.

A chunk that is absent reads as zeros in zarr, so absence is damage only when the writer writes
every chunk: :class:`~softlabels.store.writer.StoreWriter` does (even all-zero chunks, which zarr
skips by default). Stores written before it did may lack chunks that held only zeros (for instance
a chunk of targets that are all class 0); verify names those as missing too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec
from zarr.core.sync import sync

from softlabels.errors import InvalidArgumentError, StoreFormatError, StoreNotFoundError, UnknownNameError
from softlabels.format.encodings import Encoding, FieldSpec, flatten_cells, layout_encoding, row_encoding
from softlabels.format.encodings.topk import LOG_PROBS
from softlabels.format.encodings.values import SCALE_FIELD, decode_values
from softlabels.format.identity import data_identity, mismatches
from softlabels.format.schema import (
    ANSWERED_ARRAY,
    ATTRIBUTE_KEY,
    IGNORED_TARGET,
    SHARD_RUNS_ARRAY,
    SHARDS_DONE_ARRAY,
    TARGETS_ARRAY,
    VIEW_PARAMS_ARRAY,
    DatasetInfo,
    Layout,
    StoreHeader,
    run_token,
)
from softlabels.format.views import view_params_spec
from softlabels.store.arrays import READ_ERRORS, chunk_key, reason

KEPT_MASS_TOLERANCE = 1e-3
"""How far a top-k row's kept probability mass may exceed 1 (writers round it to at most 1)."""
SHOWN = 10
"""How many rows or shards a problem lists before it says how many more there are."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a store: where (a chunk key, an array, ``zarr.json``, ``shards``) and what."""

    where: str
    problem: str

    def describe(self) -> str:
        return f"{self.where}: {self.problem}"


@dataclass(frozen=True)
class VerifyReport:
    """What :func:`verify_store` read and every problem it found (none: the store is sound)."""

    location: str
    problems: tuple[Problem, ...]
    encoding: str | None = None
    num_rows: int | None = None
    num_classes: int | None = None
    arrays: tuple[str, ...] = ()
    chunks_read: int = 0
    shards_done: int | None = None
    shards_total: int | None = None
    data_checked: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "location": self.location,
            "ok": self.ok,
            "encoding": self.encoding,
            "num_rows": self.num_rows,
            "num_classes": self.num_classes,
            "arrays": list(self.arrays),
            "chunks_read": self.chunks_read,
            "shards_done": self.shards_done,
            "shards_total": self.shards_total,
            "data_checked": self.data_checked,
            "problems": [{"where": p.where, "problem": p.problem} for p in self.problems],
        }

    def describe(self) -> str:
        """Human-readable lines: what was read, then ``ok`` or one line per problem."""
        if self.encoding is None:
            read = "the header cannot be read"
        else:
            read = (
                f"{self.encoding}, {self.num_rows} rows x {self.num_classes} classes; read {self.chunks_read} "
                f"chunks of {len(self.arrays)} arrays ({', '.join(self.arrays)}); "
                f"{self.shards_done} of {self.shards_total} shards written by the header's run"
            )
        lines = [f"verify {self.location}: {read}"]
        checked = "checksums, shapes and dtypes, values, completeness"
        data = "data identity" if self.data_checked else "data identity not checked (no dataset given)"
        if self.ok:
            lines.append(f"ok: {checked}, {data}")
        else:
            lines.append(f"{len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}:")
            lines.extend(f"  {problem.describe()}" for problem in self.problems)
        return "\n".join(lines)


@dataclass
class _Findings:
    problems: list[Problem] = field(default_factory=list)
    chunks_read: int = 0

    def add(self, where: str, problem: str) -> None:
        self.problems.append(Problem(where, problem))


def verify_store(location: str | os.PathLike[str], dataset: DatasetInfo | None = None) -> VerifyReport:
    """Read every chunk of the store at ``location`` and check it; collect every problem.

    Args:
        location: a local path or any location zarr-python opens.
        dataset: what the data the store is meant for records about itself
            (:func:`softlabels.format.identity.dataset_info` of a dataset source); its data identity
            must equal the store's.

    Returns:
        The report; ``report.ok`` is False when anything is wrong (each problem names its chunk key,
        array or record).

    Raises:
        StoreNotFoundError: nothing is at ``location``.
    """
    where = os.fspath(location)
    findings = _Findings()
    opened = _open(where, findings)
    if opened is None:
        return VerifyReport(where, tuple(findings.problems))
    group, header = opened
    layout = header.layout
    encoding = _encoding(layout, findings)
    specs = _row_specs(encoding, layout)
    arrays = {spec.name: _open_array(group, spec.name, findings) for spec in specs}
    readable = {
        spec.name: array
        for spec in specs
        if (array := arrays[spec.name]) is not None and _matches_layout(array, spec, layout, findings)
    }
    done = _shard_records(group, header, findings)
    _check_rows(readable, encoding, layout, done, findings)
    if dataset is not None:
        for line in mismatches(
            data_identity(header.provenance.dataset),
            data_identity(dataset),
            have_name="store",
            want_name="the data",
        ):
            findings.add("provenance.dataset", f"made from other data: {line}")
    return VerifyReport(
        where,
        tuple(findings.problems),
        encoding=layout.encoding_spec.describe() if encoding is not None else layout.encoding,
        num_rows=layout.num_rows,
        num_classes=layout.num_classes,
        arrays=(*(spec.name for spec in specs), SHARDS_DONE_ARRAY, *_run_records(header)),
        chunks_read=findings.chunks_read,
        shards_done=int(done.sum()),
        shards_total=layout.num_shards,
        data_checked=dataset is not None,
    )


def _run_records(header: StoreHeader) -> tuple[str, ...]:
    """The per-shard run record, which stores made before run ids do not have."""
    return (SHARD_RUNS_ARRAY,) if header.run_id is not None else ()


def _open(where: str, findings: _Findings) -> tuple[Any, StoreHeader] | None:
    """The group and its parsed header, or None with the problem recorded."""
    try:
        group = zarr.open_group(where, mode="r")
    except FileNotFoundError as exc:
        raise StoreNotFoundError(f"no label store at {where}") from exc
    except (*READ_ERRORS, KeyError) as exc:  # a truncated or garbled zarr.json
        findings.add("zarr.json", f"the group's metadata cannot be read ({reason(exc)})")
        return None
    try:
        return group, StoreHeader.from_json(group.attrs.get(ATTRIBUTE_KEY), where=where)
    except StoreFormatError as exc:
        findings.add("zarr.json", str(exc).removeprefix(f"{where} "))
        return None


def _encoding(layout: Layout, findings: _Findings) -> Encoding | None:
    try:
        encoding = layout_encoding(layout)
        encoding.fields(layout.num_classes)
    except (UnknownNameError, InvalidArgumentError) as exc:
        findings.add("zarr.json", f"layout.encoding '{layout.encoding}' cannot be read ({exc})")
        return None
    return encoding


def _row_specs(encoding: Encoding | None, layout: Layout) -> tuple[FieldSpec, ...]:
    """Every array with one row per sample: the encoding's fields, the targets and the answered mask."""
    fields = encoding.fields(layout.num_classes) if encoding is not None else ()
    mask: tuple[FieldSpec, ...] = (FieldSpec(ANSWERED_ARRAY, (), "uint8"),) if layout.answered_mask else ()
    if layout.views is not None and layout.view_recipe is not None:
        mask += (view_params_spec(layout.views),)
    return (*fields, FieldSpec(TARGETS_ARRAY, layout.target_axes, "int32"), *mask)


def _open_array(group: Any, name: str, findings: _Findings) -> zarr.Array[Any] | None:
    try:
        array = group[name]
    except KeyError:
        findings.add(name, "the array is missing")
        return None
    except READ_ERRORS as exc:
        findings.add(f"{name}/zarr.json", f"the array's metadata cannot be read ({reason(exc)})")
        return None
    if not isinstance(array, zarr.Array):
        findings.add(name, "is a group, not an array")
        return None
    return array


def _matches_layout(array: zarr.Array[Any], spec: FieldSpec, layout: Layout, findings: _Findings) -> bool:
    """Whether shape, dtype and chunking are what the layout implies (each difference is recorded).

    An array that differs is not read: its chunks would not line up with the layout's rows. A
    missing checksum codec is recorded but the array is still read.
    """
    expected = {
        "shape": (tuple(array.shape), (layout.num_rows, *spec.row_shape)),
        "dtype": (str(array.dtype), str(np.dtype(spec.dtype))),
        "chunks": (tuple(array.chunks), (layout.chunk_rows, *spec.row_shape)),
    }
    differing = [what for what, (found, wanted) in expected.items() if found != wanted]
    for what in differing:
        found, wanted = expected[what]
        findings.add(spec.name, f"{what} is {found}, the layout implies {wanted}")
    if not any(isinstance(codec, Crc32cCodec) for codec in array.metadata.codecs):  # type: ignore[union-attr]
        findings.add(spec.name, "has no crc32c checksum codec, so damaged chunks cannot be detected")
    return not differing


def _shard_records(group: Any, header: StoreHeader, findings: _Findings) -> np.ndarray:
    """Which shards the header's run wrote, recording every missing, damaged or foreign record."""
    layout = header.layout
    shards = layout.num_shards
    records: dict[str, np.ndarray] = {}
    for name, dtype in ((SHARDS_DONE_ARRAY, "uint8"), (SHARD_RUNS_ARRAY, "uint64")):
        if name == SHARD_RUNS_ARRAY and header.run_id is None:  # made before run ids: no per-shard run record
            continue
        array = _open_array(group, name, findings)
        records[name] = _read_records(array, name, shards, dtype, findings)
    done = records[SHARDS_DONE_ARRAY] == 1
    if SHARD_RUNS_ARRAY in records and header.run_id is not None:
        done &= records[SHARD_RUNS_ARRAY] == run_token(header.run_id)
        foreign = np.flatnonzero((records[SHARDS_DONE_ARRAY] == 1) & ~done & (records[SHARD_RUNS_ARRAY] != 0))
        if foreign.size:
            findings.add(
                "shard_runs",
                f"shards {_listed(foreign)} were written by another run than the header's ({header.run_id})",
            )
    bad = np.flatnonzero(~np.isin(records[SHARDS_DONE_ARRAY], (0, 1)))
    if bad.size:
        findings.add("shards_done", f"shards {_listed(bad)} hold a record other than 0 or 1")
    pending = np.flatnonzero(~done)
    if pending.size:
        state = "says complete, but" if header.complete else "is incomplete:"
        findings.add(
            "shards",
            f"the store {state} {pending.size} of {shards} shards are not recorded as written by run "
            f"{header.run_id} ({_listed(pending)})",
        )
    elif not header.complete:
        findings.add("zarr.json", "every shard is written but the header is not marked complete")
    return np.asarray(done)


def _read_records(
    array: zarr.Array[Any] | None, name: str, shards: int, dtype: str, findings: _Findings
) -> np.ndarray:
    """One record per shard (one chunk each); a missing or damaged record reads as 0 (not written)."""
    records = np.zeros(shards, dtype=dtype)
    if array is None:
        return records
    if tuple(array.shape) != (shards,):
        findings.add(name, f"shape is {tuple(array.shape)}, the layout implies ({shards},)")
        return records
    # A shard's record chunk exists once the shard is written; an absent one is a shard still to write.
    present = _stored_keys(array)
    rows = int(array.chunks[0])
    for chunk in range(-(-shards // rows)):
        key = chunk_key(array, name, chunk)
        if key in present:
            start, stop = chunk * rows, min((chunk + 1) * rows, shards)
            values = _read_chunk(array, key, start, stop, findings)
            if values is not None:
                records[start:stop] = values
    return records


def _check_rows(
    readable: dict[str, zarr.Array[Any]],
    encoding: Encoding | None,
    layout: Layout,
    done: np.ndarray,
    findings: _Findings,
) -> None:
    """Read every chunk of every row array of the shards that are written and check the decoded values."""
    present = {name: _stored_keys(array) for name, array in readable.items()}
    for chunk in range(layout.num_chunks):
        start, stop = layout.chunk_bounds(chunk)
        if not done[start // layout.shard_rows]:
            continue  # reported with the shard records; its rows may not be written yet
        keys = {name: chunk_key(array, name, chunk) for name, array in readable.items()}
        rows: dict[str, np.ndarray] = {}
        for name, array in readable.items():
            if keys[name] not in present[name]:
                findings.add(keys[name], f"the chunk is missing (rows [{start}, {stop}) would read as zeros)")
                continue
            values = _read_chunk(array, keys[name], start, stop, findings)
            if values is not None:
                rows[name] = values
        findings.problems.extend(value_problems(encoding, layout, rows, ChunkRows(keys, start)))


@dataclass(frozen=True)
class ChunkRows:
    """Where the rows under check are: each array's key for this chunk and the store row of each row."""

    keys: dict[str, str]
    first_row: int
    selected: np.ndarray | None = None  # the rows of the chunk under check (default: all)
    cells: int = 1  # label cells per row (views, positions): checks of flattened cells name row and cell

    def select(self, mask: np.ndarray) -> ChunkRows:
        """The same chunk restricted to the rows ``mask`` marks."""
        return ChunkRows(self.keys, self.first_row, np.flatnonzero(mask), self.cells)

    def per_cell(self, cells: int) -> ChunkRows:
        """The same rows, checked as ``cells`` flattened cells each (``bad[i]`` is cell ``i % cells`` of row ``i // cells``)."""
        return ChunkRows(self.keys, self.first_row, self.selected, cells)

    def flag(self, name: str, bad: Any, what: str, shown: np.ndarray | None = None) -> list[Problem]:
        """A problem naming ``name``'s chunk when any row (or cell) is ``bad``: how many, and the first one."""
        where = np.flatnonzero(np.asarray(bad))
        if not where.size:
            return []
        first = int(where[0])
        index, cell = divmod(first, self.cells)
        row = self.first_row + (index if self.selected is None else int(self.selected[index]))
        example = f": {shown[first]}" if shown is not None else ""
        if self.cells == 1:
            return [
                Problem(self.keys.get(name, name), f"{where.size} rows {what} (first: row {row}{example})")
            ]
        rows = np.unique(where // self.cells).size
        return [
            Problem(
                self.keys.get(name, name),
                f"{rows} rows ({where.size} label cells) {what} (first: row {row}, cell {cell}{example})",
            )
        ]


def value_problems(
    encoding: Encoding | None, layout: Layout, rows: dict[str, np.ndarray], chunk: ChunkRows
) -> list[Problem]:
    """What is wrong with the stored rows of one chunk (``rows``: each readable array's raw values).

    Checks what every format promises: finite values; class indices in ``[0, C)``; top-k
    log-probabilities <= 0 with a kept mass of at most ``1 + KEPT_MASS_TOLERANCE`` and distinct
    classes per row; sampled counts summing to ``S``; targets in ``[0, C)``; an answered mask of
    0 and 1. Rows an answered mask marks unanswered hold no label and are skipped. Arrays that could
    not be read are missing from ``rows``; checks that need them are skipped (they are reported).
    """
    problems: list[Problem] = []
    num_classes = layout.num_classes
    if TARGETS_ARRAY in rows:
        problems += _target_problems(rows[TARGETS_ARRAY], layout, chunk)
    if VIEW_PARAMS_ARRAY in rows:
        problems += _view_problems(rows[VIEW_PARAMS_ARRAY], chunk)
    if encoding is None:
        return problems
    names = [spec.name for spec in encoding.fields(num_classes)]
    if not all(name in rows for name in names):
        return problems  # a field's chunk is missing or damaged: reported already
    fields = {name: rows[name] for name in names}
    if layout.answered_mask:
        if ANSWERED_ARRAY not in rows:
            return problems  # which rows hold labels is unknown; the mask's chunk is reported
        mask = rows[ANSWERED_ARRAY]
        problems += chunk.flag(
            ANSWERED_ARRAY, ~np.isin(mask, (0, 1)), "hold an answered flag other than 0 or 1", mask
        )
        fields = {name: values[mask == 1] for name, values in fields.items()}
        chunk = chunk.select(mask == 1)
    # Each cell (a view, a position) is a label row of the row encoding: check them one by one.
    cells = chunk.per_cell(layout.cells_per_row)
    return problems + _field_problems(
        row_encoding(encoding), flatten_cells(encoding, fields), num_classes, cells
    )


def _view_problems(params: np.ndarray, chunk: ChunkRows) -> list[Problem]:
    """View parameters that no crop can have: not finite or whole, a box off the image's corner
    (negative top or left, empty height or width), a flip other than 0 and 1.

    The image's size is not stored, so a box reaching past the far edge is caught by the student
    (which knows the images) rather than here.
    """
    cells = chunk.per_cell(params.shape[1])
    flat = params.reshape(-1, params.shape[-1]).astype(np.float64)
    finite = np.isfinite(flat).all(axis=1)
    box = np.where(np.isfinite(flat), flat, 0.0)
    impossible = (
        (box != np.round(box)).any(axis=1)
        | (box[:, 0] < 0)
        | (box[:, 1] < 0)
        | (box[:, 2] < 1)
        | (box[:, 3] < 1)
        | ~np.isin(box[:, 4], (0, 1))
    )
    return cells.flag(VIEW_PARAMS_ARRAY, ~finite, "hold view parameters that are NaN or Inf") + cells.flag(
        VIEW_PARAMS_ARRAY,
        finite & impossible,
        "hold a crop box that is not whole pixels inside the image, or a flip other than 0 and 1",
        flat,
    )


def _target_problems(stored: np.ndarray, layout: Layout, chunk: ChunkRows) -> list[Problem]:
    """Targets outside ``[0, C)``; per-position targets may also be ignored (:data:`IGNORED_TARGET`)."""
    num_classes = layout.num_classes
    targets = stored.astype(np.int64).reshape(len(stored), -1)
    outside = (targets < 0) | (targets >= num_classes)
    allowed = f"[0, {num_classes})"
    if layout.positions is not None:
        outside &= targets != IGNORED_TARGET
        allowed += f" and not {IGNORED_TARGET} (ignored)"
    return chunk.per_cell(targets.shape[1]).flag(
        TARGETS_ARRAY, outside.reshape(-1), f"hold a target outside {allowed}", targets.reshape(-1)
    )


def _field_problems(
    encoding: Encoding, fields: dict[str, np.ndarray], num_classes: int, chunk: ChunkRows
) -> list[Problem]:
    params = encoding.params()
    if encoding.name == "sampled":
        sums = fields["counts"].astype(np.int64).sum(axis=1)
        return [
            *_index_problems(fields["indices"], num_classes, chunk),
            *chunk.flag(
                "counts",
                sums != params["samples"],
                f"hold counts that do not sum to S = {params['samples']}",
                sums,
            ),
        ]
    value_name = "logits" if encoding.name == "full" else "values"
    values = decode_values(value_name, fields, params["dtype"]).astype(np.float64)
    problems = chunk.flag(value_name, ~np.isfinite(values).all(axis=1), "hold non-finite values")
    if SCALE_FIELD in fields:
        scale = fields[SCALE_FIELD]
        problems += chunk.flag(SCALE_FIELD, ~(scale >= 0), "hold a negative or NaN int8 scale", scale)
    if encoding.name != "topk":
        return problems
    ordered = np.sort(fields["indices"].astype(np.int64), axis=1)
    normalizer = fields["log_normalizer"]
    problems += [
        *_index_problems(fields["indices"], num_classes, chunk),
        *chunk.flag("indices", (ordered[:, 1:] == ordered[:, :-1]).any(axis=1), "keep a class twice"),
        *chunk.flag(
            "log_normalizer", ~np.isfinite(normalizer), "hold a non-finite log-normalizer", normalizer
        ),
    ]
    if params.get("values") != LOG_PROBS:
        return problems  # older stores hold raw kept logits, which may be positive
    finite = np.where(np.isfinite(values), values, -np.inf)
    peak, mass = finite.max(axis=1), np.exp(finite).sum(axis=1)
    return [
        *problems,
        *chunk.flag("values", peak > 0, "hold a log-probability above 0", peak),
        *chunk.flag(
            "values",
            mass > 1 + KEPT_MASS_TOLERANCE,
            f"keep a probability mass above 1 + {KEPT_MASS_TOLERANCE:g}",
            mass,
        ),
    ]


def _index_problems(indices: np.ndarray, num_classes: int, chunk: ChunkRows) -> list[Problem]:
    wide = indices.astype(np.int64)
    outside = (wide < 0) | (wide >= num_classes)
    worst = np.where(outside, wide, -1).max(axis=1) if wide.size else np.zeros(0, dtype=np.int64)
    return chunk.flag("indices", outside.any(axis=1), f"hold a class index outside [0, {num_classes})", worst)


def _stored_keys(array: zarr.Array[Any]) -> set[str]:
    """The keys of the chunks the array's store holds (zarr reads an absent chunk as its fill value)."""

    async def listed() -> set[str]:
        prefix = f"{array.store_path.path}/"
        return {key async for key in array.store_path.store.list_prefix(prefix)}

    keys: set[str] = sync(listed())
    return keys


def _read_chunk(
    array: zarr.Array[Any], key: str, start: int, stop: int, findings: _Findings
) -> np.ndarray | None:
    findings.chunks_read += 1
    try:
        return np.asarray(array[start:stop])
    except READ_ERRORS as exc:
        findings.add(key, f"the chunk cannot be read ({reason(exc)})")
        return None


def _listed(numbers: np.ndarray) -> str:
    shown = ", ".join(str(int(n)) for n in numbers[:SHOWN])
    more = f" and {numbers.size - SHOWN} more" if numbers.size > SHOWN else ""
    return f"{shown}{more}"
