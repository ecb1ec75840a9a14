"""Writing a store's rows out as one ``.npz`` file (``softlabels export``), for tools that do not read Zarr.

The file holds the stored rows decoded as the losses take them (:meth:`Encoding.decode`), under the
store's own field names, plus the targets and the header:

* ``full``: ``logits`` float32 ``[N, C]``, the stored rows (teacher logits / T);
* ``topk``: ``values`` float32 ``[N, K]`` (kept log-probabilities), ``indices`` int64 ``[N, K]``,
  ``log_normalizer`` float32 ``[N]``;
* ``sampled``: ``indices`` int64 ``[N, S]`` and ``counts`` int64 ``[N, S]``;
* ``targets`` int64 ``[N]``; ``answered`` bool ``[N]`` when the store has an answered mask;
* ``view_params`` float32 ``[N, V, 5]`` (top, left, height, width, flip) when the store holds views;
* ``header``: the store's header as a JSON string (``json.loads(str(npz["header"]))``).

Stores with label axes (views, token positions; the header's ``layout.views``/``layout.positions``)
keep them: every field is ``[N, *label_axes, ...]`` (e.g. ``values`` ``[N, L, K]``), and per-position
targets are ``[N, L]`` with ``-100`` at ignored positions.

It is read with ``numpy.load`` without pickles, and written through a temporary sibling and a rename,
so a killed export never leaves half a file; an existing file is replaced only when asked.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from softlabels.errors import InvalidArgumentError, StoreWriteError
from softlabels.format.schema import ANSWERED_ARRAY, TARGETS_ARRAY, VIEW_PARAMS_ARRAY
from softlabels.store.reader import LabelStore, open_store

HEADER_KEY = "header"
EXPORT_SUFFIX = ".npz"


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote."""

    store: str
    out: str
    arrays: dict[str, tuple[int, ...]]
    bytes: int

    def describe(self) -> str:
        arrays = ", ".join(f"{name} {list(shape)}" for name, shape in self.arrays.items())
        return f"Exported {self.store} to {self.out}: {arrays}, header; {self.bytes / 1e6:.2f} MB."


def export_store(
    location: str | os.PathLike[str], out: str | os.PathLike[str], *, overwrite: bool = False
) -> ExportSummary:
    """Write every row of the complete store at ``location`` into the ``.npz`` file ``out``.

    Raises:
        InvalidArgumentError: ``out`` does not end in ``.npz``, or exists and ``overwrite`` is off.
        IncompleteStoreError: the store has unwritten shards.
        StoreCorruptError: a chunk cannot be read (named by its key).
        StoreWriteError: ``out`` cannot be written.
    """
    target = Path(out)
    if target.suffix != EXPORT_SUFFIX:
        raise InvalidArgumentError(f"the export file {target} must end in {EXPORT_SUFFIX}")
    if target.exists() and not overwrite:
        raise InvalidArgumentError(f"{target} exists; set overwrite to replace it")
    store = open_store(location)
    arrays = _decoded_rows(store)
    arrays[HEADER_KEY] = np.array(json.dumps(store.header.to_json()))
    _save_atomically(target, arrays)
    return ExportSummary(
        store.location,
        str(target),
        {name: values.shape for name, values in arrays.items() if name != HEADER_KEY},
        target.stat().st_size,
    )


def _decoded_rows(store: LabelStore) -> dict[str, np.ndarray]:
    """Every row's decoded fields and target, read a chunk at a time into arrays allocated once."""
    arrays: dict[str, np.ndarray] = {}
    for chunk in range(store.num_chunks):
        rows = store.read_chunk(chunk)
        for name, values in {**_exported(store, rows.fields), TARGETS_ARRAY: rows.targets}.items():
            if name not in arrays:
                arrays[name] = np.empty((store.num_rows, *values.shape[1:]), dtype=values.dtype)
            arrays[name][rows.start : rows.stop] = values
    if store.layout.answered_mask:
        arrays[ANSWERED_ARRAY] = store.answered
    if store.layout.view_recipe is not None:  # the crops and flips a reader needs to replay the views
        arrays[VIEW_PARAMS_ARRAY] = store.read_view_params(0, store.num_rows)
    return arrays


def _exported(store: LabelStore, fields: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if store.layout.encoding == "sampled":  # counts are whole numbers: keep them exact
        return {name: values.astype(np.int64) for name, values in fields.items()}
    return fields


def _save_atomically(target: Path, arrays: dict[str, np.ndarray]) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise StoreWriteError(f"cannot write {target}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, allow_pickle=False, **arrays)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise StoreWriteError(f"cannot write {target}: {exc.strerror or exc}") from exc
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
