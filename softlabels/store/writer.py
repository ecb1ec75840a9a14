"""Creating, resuming and completing label stores.

A store is created whole (every array and the header) in a temporary sibling folder and
renamed into place, so an interruption never leaves a half-made group behind. Rows are then
written one shard at a time; a shard is recorded in the ``shards_done`` array (one chunk per
shard, so concurrent writers never touch the same chunk) only after its rows are written. The
header says ``complete`` only after every shard is recorded.

Several runs may point at one store. Each store has a run id (made when it is created or
overwritten) and each shard records the run id that wrote it (``shard_runs``). Runs coordinate
through an advisory lock on a sibling file, ``.NAME.lock`` (``fcntl.flock``: the kernel drops it
when a process dies, so a killed run never leaves it stuck, and it is never put inside a folder
that is refused): creating, replacing and completing a store hold it exclusively, and writing a
shard holds it shared after checking that the store still carries this run's id. A run whose store
was overwritten therefore stops before writing a single row into its successor, two identical runs
started together share the store (same run id, same bytes), and completion verifies every shard's
run id, so a mixed store is never called complete.

On object storage (``s3://``) there is no lock and no rename, so the same guarantees rest on
other steps. A store is created by uploading its arrays' metadata first and the group's metadata
(the header) last, with a conditional write that only one run can win: until then the prefix holds
no store (readers find nothing; a marker object, :data:`~softlabels.store.location.UNFINISHED_MARKER`,
tells the next writer that the leftovers of an interrupted creation may be cleared), and a run that
loses the race joins the winner's store when its settings match. A store is removed (overwrite)
group metadata first. The run-id fencing is the same (checked before each shard and at
completion), but as nothing serialises writers it detects a concurrent writer instead of waiting
for it: a shard being written while another run replaces the store can still land in the new
store, where its run id keeps it from counting as written, so the new store is never called
complete with it. Leftover ``.partial`` files only exist locally. HTTP(S) locations are read-only.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from softlabels.errors import (
    InvalidArgumentError,
    SoftLabelsError,
    StoreConflictError,
    StoreFormatError,
    StoreMismatchError,
    StoreWriteError,
)
from softlabels.files import folder_bytes
from softlabels.format.encodings import Encoding, FieldSpec, cell_encoding
from softlabels.format.identity import Scope, mismatches, store_identity
from softlabels.format.schema import (
    ANSWERED_ARRAY,
    ATTRIBUTE_KEY,
    SHARD_RUNS_ARRAY,
    SHARDS_DONE_ARRAY,
    TARGETS_ARRAY,
    VIEW_PARAMS_ARRAY,
    StoreHeader,
    new_run_id,
    run_token,
)
from softlabels.format.views import VIEW_PARAMS as VIEW_PARAM_NAMES
from softlabels.format.views import view_params_spec
from softlabels.store.arrays import ArrayHandles
from softlabels.store.codecs import checked_compressors
from softlabels.store.location import (
    GROUP_METADATA,
    UNFINISHED_MARKER,
    RemoteFolder,
    check_writable,
    is_remote,
    zarr_store,
)
from softlabels.store.reader import read_header

TARGETS_DTYPE = "int32"
ANSWERED_DTYPE = "uint8"


@dataclass(frozen=True)
class WriteSummary:
    """What a job that writes a store (``generate``, ``convert``) did."""

    out: str
    num_rows: int
    num_classes: int
    shards_total: int
    shards_written: int
    bytes_on_disk: int
    seconds: float
    rows_written: int  # rows of the shards written this run (a resumed run skips the others)

    def describe_rows(self) -> str:
        """Rows, shards written this run (and already done before) and size on disk."""
        skipped = self.shards_total - self.shards_written
        resumed = f" ({skipped} shards were already done)" if skipped else ""
        return (
            f"{self.num_rows} samples x {self.num_classes} classes, {self.shards_written} of {self.shards_total} "
            f"shards this run{resumed}, {self.bytes_on_disk / 1e6:.2f} MB on disk "
            f"({self.bytes_on_disk / max(1, self.num_rows):.1f} B/sample)"
        )


class StoreLock:
    """The advisory lock of one store location, on the sibling file ``.NAME.lock``.

    Each :meth:`hold` opens the file anew, so holders in one process (threads, dask tasks) and in
    several processes all coordinate. The file is left in place: removing it would let two runs
    lock two different files.
    """

    def __init__(self, store: Path) -> None:
        self.store = store
        self.path = store.with_name(f".{store.name}.lock")

    @contextlib.contextmanager
    def hold(self, *, exclusive: bool) -> Iterator[None]:
        """Hold the lock (exclusive, or shared with other shard writers) for the ``with`` block.

        Raises:
            StoreWriteError: the lock file cannot be created (the destination is not writable).
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreWriteError(f"cannot write a store at {self.store}: {exc.strerror or exc}") from exc
        try:
            mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
            try:
                fcntl.flock(handle, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                # Another run is creating, replacing or completing the store (or writing a shard): wait.
                print(
                    f"waiting for another run that is writing {self.store} ...", file=sys.stderr, flush=True
                )
                fcntl.flock(handle, mode)
            yield
        finally:
            os.close(handle)  # releases the lock


class StoreWriter:
    """Writes shards into one store whose header (with its run id) is already on disk.

    ``encoding`` may be the row encoding or its :func:`~softlabels.format.encodings.cell_encoding`
    for the layout's label axes; ``self.encoding`` is always the latter (whole samples), so callers
    encode ``[n, *label_axes, C]`` blocks with ``writer.encoding.encode``.
    """

    def __init__(self, path: str | os.PathLike[str], header: StoreHeader, encoding: Encoding) -> None:
        if header.run_id is None:
            raise StoreMismatchError(
                f"{path} was made by a softlabels without run ids; it can be read but not resumed "
                "(overwrite it to write it again)"
            )
        self.path = check_writable(path)  # a local path or an s3:// URL, as given
        self.header = header
        self.encoding = _sample_encoding(encoding, header)
        self._token = run_token(header.run_id)
        self._remote = RemoteFolder(self.path) if is_remote(self.path) else None
        self._lock = None if self._remote is not None else StoreLock(Path(self.path))
        self._group = zarr.open_group(zarr_store(self.path, read_only=False), mode="r+")
        self._arrays = ArrayHandles(self._group, self.path, write_every_chunk=True)

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], header: StoreHeader, encoding: Encoding, *, overwrite: bool = False
    ) -> StoreWriter:
        """Create the store at ``path``, or reopen it to resume when it was made with the same settings.

        ``path`` is a local folder or an ``s3://`` location (see the module's notes on object storage).

        Raises:
            StoreMismatchError: ``path`` holds a store made with other settings and ``overwrite`` is off.
            StoreWriteError: ``path`` cannot be written (an ``http(s)://`` location is read-only), or
                holds something that is not a store.
            StoreConflictError: on object storage, other runs created and removed the store meanwhile.
        """
        if is_remote(check_writable(path)):
            return cls._open_remote(RemoteFolder(os.fspath(path)), header, encoding, overwrite=overwrite)
        target = Path(path)
        if _holds_anything(target):  # refuse a foreign folder before a lock file is made beside it
            read_header(str(target), refuse_foreign=True)
        with StoreLock(target).hold(exclusive=True):
            if _holds_anything(target):
                existing = read_header(str(target), refuse_foreign=True)
                if overwrite:
                    _remove_store(target)
                else:
                    _refuse_mismatch(existing, header, target)
                    _remove_partial_files(target)  # no shard writer runs while the lock is exclusive
                    return cls(target, existing, encoding)
            created = replace(header, run_id=new_run_id())
            _create_atomically(target, created, encoding)
            return cls(target, created, encoding)

    @classmethod
    def _open_remote(
        cls, remote: RemoteFolder, header: StoreHeader, encoding: Encoding, *, overwrite: bool
    ) -> StoreWriter:
        """:meth:`open` on object storage: no lock, a conditional create decides between racing runs."""
        location = remote.location
        try:
            existing = _remote_header(remote)
            if existing is not None and overwrite:
                remote.remove_all()
            elif existing is not None:
                _refuse_mismatch(existing, header, location)
                return cls(location, existing, encoding)
            elif _holds_foreign_objects(remote):
                raise StoreFormatError(
                    f"{location} holds objects and is not a softlabels store; refusing to touch it "
                    "(choose another destination)"
                )
            else:  # nothing, or the leftovers of an interrupted creation or removal: never a store
                remote.remove_all()
            created = replace(header, run_id=new_run_id())
            if _create_remotely(remote, created, encoding):
                return cls(location, created, encoding)
            # Another run created the store since we looked: join it, as a local run would after the lock.
            winner = _remote_header(remote)
        except OSError as exc:
            if isinstance(exc, SoftLabelsError):
                raise
            raise StoreWriteError(f"cannot write a store at {location}: {exc.strerror or exc}") from exc
        if winner is None:
            raise StoreConflictError(
                f"{location} was created and removed by other runs while this run created it"
            )
        _refuse_mismatch(winner, header, location)
        return cls(location, winner, encoding)

    def shards_done(self) -> np.ndarray:
        """Boolean mask over shards that this run's id wrote, read from the store."""
        done = np.asarray(self._arrays[SHARDS_DONE_ARRAY][:], dtype=bool)
        ours: np.ndarray = done & (np.asarray(self._arrays[SHARD_RUNS_ARRAY][:]) == self._token)
        return ours

    def pending_shards(self) -> list[int]:
        return np.flatnonzero(~self.shards_done()).tolist()

    def write_shard(
        self,
        shard: int,
        fields: dict[str, np.ndarray],
        targets: np.ndarray,
        answered: np.ndarray | None = None,
        view_params: np.ndarray | None = None,
    ) -> None:
        """Write every row of ``shard`` and then record it as done by this run.

        ``answered`` (one bool per row of the shard) is required exactly when the layout has an
        answered mask: rows marked False hold no label. ``view_params`` (``[n, V, 5]``, each view's
        crop box and flip) is required exactly when the layout records a view recipe.

        Raises:
            StoreConflictError: the store was replaced (or removed) since this run opened it; nothing
                was written.
            InvalidArgumentError: ``answered`` is missing for a masked store, given for an unmasked
                one, or not one value per row; likewise ``view_params``.
        """
        start, stop = self.header.layout.shard_bounds(shard)
        self._check_shapes(fields, targets, stop - start)
        mask_writes = self._answered_writes(answered, start, stop)
        mask_writes.update(self._view_writes(view_params, start, stop))
        with self._hold(exclusive=False):
            self._refuse_if_replaced()
            writes: dict[str, tuple[int | slice, Any]] = {
                **{name: (slice(start, stop), values) for name, values in fields.items()},
                **mask_writes,
                TARGETS_ARRAY: (slice(start, stop), targets.astype(TARGETS_DTYPE, copy=False)),
                SHARD_RUNS_ARRAY: (shard, self._token),
                SHARDS_DONE_ARRAY: (shard, 1),  # last: the shard counts as done only after its rows
            }
            for name, (where, values) in writes.items():
                try:
                    self._arrays[name][where] = values
                except OSError as exc:
                    raise shard_write_error(f"{self.path}/{name}", self.path, shard, exc) from exc

    def _hold(self, *, exclusive: bool) -> contextlib.AbstractContextManager[None]:
        """The store lock; object storage has none (concurrent writers are detected by fencing instead)."""
        return contextlib.nullcontext() if self._lock is None else self._lock.hold(exclusive=exclusive)

    def _check_shapes(self, fields: dict[str, np.ndarray], targets: np.ndarray, num_rows: int) -> None:
        """Refuse blocks that do not hold ``num_rows`` samples of this layout (label axes included)."""
        layout = self.header.layout
        expected = {
            spec.name: (num_rows, *spec.row_shape) for spec in self.encoding.fields(layout.num_classes)
        }
        if set(fields) != set(expected):
            raise InvalidArgumentError(
                f"a shard of {self.path} holds the fields {sorted(expected)}, got {sorted(fields)}"
            )
        given = {name: np.shape(values) for name, values in fields.items()}
        given[TARGETS_ARRAY] = np.shape(targets)
        expected[TARGETS_ARRAY] = (num_rows, *layout.target_axes)
        for name, shape in given.items():
            if tuple(shape) != expected[name]:
                raise InvalidArgumentError(
                    f"'{name}' of a shard of {self.path} must have shape {expected[name]}, got {tuple(shape)}"
                )

    def _answered_writes(
        self, answered: np.ndarray | None, start: int, stop: int
    ) -> dict[str, tuple[int | slice, Any]]:
        masked = self.header.layout.answered_mask
        if masked != (answered is not None):
            raise InvalidArgumentError(
                f"{self.path}: an answered mask is {'required' if masked else 'not allowed'} for this "
                f"store ({'its layout has' if masked else 'its layout has no'} answered mask)"
            )
        if answered is None:
            return {}
        if answered.shape != (stop - start,):
            raise InvalidArgumentError(
                f"the answered mask of rows [{start}, {stop}) must hold {stop - start} values, got shape {answered.shape}"
            )
        return {ANSWERED_ARRAY: (slice(start, stop), answered.astype(ANSWERED_DTYPE))}

    def _view_writes(
        self, view_params: np.ndarray | None, start: int, stop: int
    ) -> dict[str, tuple[int | slice, Any]]:
        layout = self.header.layout
        recorded = layout.view_recipe is not None
        if recorded != (view_params is not None):
            raise InvalidArgumentError(
                f"{self.path}: view parameters are {'required' if recorded else 'not allowed'} for this "
                f"store ({'its layout records' if recorded else 'its layout has no'} view recipe)"
            )
        if view_params is None:
            return {}
        expected = (stop - start, layout.views, len(VIEW_PARAM_NAMES))
        if view_params.shape != expected:
            raise InvalidArgumentError(
                f"the view parameters of rows [{start}, {stop}) must have shape {expected}, got {view_params.shape}"
            )
        return {VIEW_PARAMS_ARRAY: (slice(start, stop), view_params.astype(np.float32, copy=False))}

    def bytes_on_disk(self) -> int:
        if self._remote is not None:
            return self._remote.total_bytes()
        return folder_bytes(Path(self.path))

    def mark_complete(self) -> StoreHeader:
        """Flag the store complete once every shard is recorded with this run's id; returns the final header.

        Raises:
            StoreWriteError: a shard is not written, or was written by another run.
            StoreConflictError: the store was replaced since this run opened it.
        """
        with self._hold(exclusive=True):
            self._refuse_if_replaced()
            missing = self.pending_shards()
            if missing:
                raise StoreWriteError(
                    f"cannot complete {self.path}: shards {missing[:10]} are not written by this run"
                )
            if self._remote is None:  # a shard writer killed mid-chunk (a lost dask worker) left these
                _remove_partial_files(Path(self.path))
            self.header = replace(self.header, complete=True)
            self._group.attrs[ATTRIBUTE_KEY] = self.header.to_json()
            return self.header

    def _refuse_if_replaced(self) -> None:
        """Fencing: stop unless the store on disk is still the one this run writes (same run id)."""
        if self._remote is None:
            current = _run_id_on_disk(Path(self.path))
        else:
            current = _run_id_in(self._remote.read(GROUP_METADATA), self.path)
        if current is _REMOVED:
            raise StoreConflictError(f"{self.path} was removed while this run was writing it")
        if current != self.header.run_id:
            raise StoreConflictError(
                f"{self.path} was replaced by another run (run id {current}) while this run "
                f"(run id {self.header.run_id}) was writing it; this run stopped without writing into it"
            )


_REMOVED = object()


def _run_id_on_disk(path: Path) -> object:
    """The run id in the group's ``zarr.json``, or ``_REMOVED`` when the store is gone.

    Checked before every shard, so it reads the one metadata file directly instead of opening the
    group and parsing the whole header (20 times cheaper; a sixth of a shard's write time before).
    """
    try:
        metadata = (path / GROUP_METADATA).read_bytes()
    except FileNotFoundError:
        return _REMOVED
    except OSError as exc:
        raise StoreFormatError(f"{path} has an unreadable header ({exc})") from exc
    return _run_id_in(metadata, str(path))


def _run_id_in(metadata: bytes | None, where: str) -> object:
    """The run id in the bytes of a group's ``zarr.json``, or ``_REMOVED`` when there are none."""
    if metadata is None:
        return _REMOVED
    try:
        document = json.loads(metadata)
    except ValueError as exc:
        raise StoreFormatError(f"{where} has an unreadable header ({exc})") from exc
    header = document.get("attributes", {}).get(ATTRIBUTE_KEY) if isinstance(document, dict) else None
    return header.get("run_id") if isinstance(header, dict) else None


def shard_write_error(array: str, store: str, shard: int, error: OSError) -> StoreWriteError:
    """A one-line error for a failed write into ``array``: the file at fault, the system's reason, what to do."""
    where = _PARTIAL_SUFFIX.sub("", str(error.filename)) if error.filename else array
    return StoreWriteError(
        f"cannot write {where}: {error.strerror or error} (shard {shard} of {store} is not recorded; "
        "make room or fix the path, then run the same command again to finish the store)"
    )


# zarr >= 3.1.3 writes a local chunk to KEY.<32 hex digits>.partial and renames it to KEY.
_PARTIAL_SUFFIX = re.compile(r"\.[0-9a-f]{32}\.partial$")


def _remove_partial_files(store: Path) -> None:
    """Delete the half-written chunk files a killed writer left behind (they are never read)."""
    for leftover in store.rglob("*.partial"):
        if _PARTIAL_SUFFIX.search(leftover.name) and leftover.is_file():
            try:
                leftover.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise StoreWriteError(
                    f"cannot remove the leftover {leftover}: {exc.strerror or exc}"
                ) from exc


def _remote_header(remote: RemoteFolder) -> StoreHeader | None:
    """The header of the store at ``remote``, or None when its group metadata is not there (no store yet)."""
    if remote.read(GROUP_METADATA) is None:
        return None
    return read_header(remote.location)


def _holds_foreign_objects(remote: RemoteFolder) -> bool:
    """Objects without a store's group metadata that are not the leftovers of a softlabels writer."""
    keys = remote.keys()
    return bool(keys) and UNFINISHED_MARKER not in keys


def _create_remotely(remote: RemoteFolder, header: StoreHeader, encoding: Encoding) -> bool:
    """Upload a new store's metadata, the group's last and only if no other run wrote one; False if one did.

    The layout is made in a local temporary folder (metadata only: no chunk is written before the
    shards) and uploaded, so remote and local stores are the same bytes.
    """
    remote.write(UNFINISHED_MARKER, b"")
    with tempfile.TemporaryDirectory(prefix="softlabels-create-") as staging:
        folder = Path(staging) / "store"
        _create_layout(folder, header, encoding)
        remote.upload_folder(folder)
        created = remote.create(GROUP_METADATA, (folder / GROUP_METADATA).read_bytes())
    remote.remove(UNFINISHED_MARKER)
    return created


def _holds_anything(path: Path) -> bool:
    return path.exists() and (not path.is_dir() or any(path.iterdir()))


def _refuse_mismatch(existing: StoreHeader, wanted: StoreHeader, path: str | Path) -> None:
    found = mismatches(
        store_identity(existing, Scope.RESUME),
        store_identity(wanted, Scope.RESUME),
        have_name="store",
        want_name="this run",
    )
    if found:
        raise StoreMismatchError(
            f"{path} was made with other settings ({'; '.join(found)}); set overwrite to replace it"
        )


def _remove_store(path: Path) -> None:
    # Renaming first makes the removal look atomic: a crash leaves a stray folder, never a damaged store.
    doomed = path.with_name(f".{path.name}.removing-{uuid.uuid4().hex[:8]}")
    try:
        path.rename(doomed)
        shutil.rmtree(doomed)
    except OSError as exc:
        raise StoreWriteError(f"cannot replace {path}: {exc.strerror or exc}") from exc


def _create_atomically(path: Path, header: StoreHeader, encoding: Encoding) -> None:
    staging = path.with_name(f".{path.name}.creating-{uuid.uuid4().hex[:8]}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _create_layout(staging, header, encoding)
        if path.exists():  # an empty folder the user made for us
            path.rmdir()
        staging.rename(path)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise StoreWriteError(f"cannot write a store at {path}: {exc.strerror or exc}") from exc


def _sample_encoding(encoding: Encoding, header: StoreHeader) -> Encoding:
    """``encoding`` applied to whole samples of ``header``'s layout (its label axes)."""
    layout = header.layout
    return cell_encoding(encoding, layout.label_axes, layout.label_axis_names)


def _create_layout(path: Path, header: StoreHeader, encoding: Encoding) -> None:
    layout = header.layout
    group = zarr.open_group(str(path), mode="w-", attributes={ATTRIBUTE_KEY: header.to_json()})
    mask: tuple[FieldSpec, ...] = (
        (FieldSpec(ANSWERED_ARRAY, (), ANSWERED_DTYPE),) if layout.answered_mask else ()
    )
    if layout.views is not None and layout.view_recipe is not None:
        mask += (view_params_spec(layout.views),)
    # Per-position targets ([N, L]) share the position axis with the labels; views do not change them.
    targets = FieldSpec(
        TARGETS_ARRAY, layout.target_axes, TARGETS_DTYPE, ("position",) if layout.positions else ()
    )
    fields = _sample_encoding(encoding, header).fields(layout.num_classes)
    for spec in (*fields, targets, *mask):
        _create_row_array(group, spec, layout.num_rows, layout.chunk_rows)
    for name, dtype in ((SHARDS_DONE_ARRAY, "uint8"), (SHARD_RUNS_ARRAY, "uint64")):
        group.create_array(
            name,
            shape=(layout.num_shards,),
            chunks=(1,),  # one chunk per shard: shard writers never share a chunk
            dtype=dtype,
            fill_value=0,
            compressors=None,
            dimension_names=("shard",),  # named, so that readers such as xarray open every array
        )


def _create_row_array(group: Any, spec: FieldSpec, num_rows: int, chunk_rows: int) -> None:
    group.create_array(
        spec.name,
        shape=(num_rows, *spec.row_shape),
        chunks=(chunk_rows, *spec.row_shape),
        dtype=spec.dtype,
        fill_value=0,
        compressors=checked_compressors(),
        dimension_names=spec.dimension_names(),
    )
