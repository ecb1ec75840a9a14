"""Deriving a compact store (top-k, sampled or requantised full) from a full one (``softlabels convert``).

The teacher is not run again: every shard of the new store is read from the full store, decoded
to float32 ``logits / T`` rows and encoded exactly as ``generate`` encodes teacher outputs, so a
conversion of a float32 full store equals direct generation with the same settings.

Work is split into the shards of the new store and run in parallel with :mod:`dask`. The
default ``threads`` scheduler suits it: a shard's work is numpy kernels (exp, cumsum, partition,
sort) and Zarr's zstd and crc32c codecs, much of which releases the GIL, and threads share the
imported modules and pickle nothing (converting 200,000 x 100 float32 rows on 2 cores with
16,384-row shards: threads 1.1 s, synchronous 1.3 s, processes 1.4 s for top-5). ``processes``
sidesteps the GIL for encodings whose Python-level work dominates, at the price of starting
interpreters (scripts must then guard their entry point with ``if __name__ == "__main__"``);
``synchronous`` runs in the calling thread (debugging, profiling). Each task writes whole chunks
of its own shard and then records the shard, so tasks never touch the same chunk and an
interrupted conversion resumes with the shards still pending; the store is flagged complete
only at the end.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from softlabels import __version__
from softlabels.errors import InvalidArgumentError, StoreMismatchError
from softlabels.format.encodings import build_encoding, encoding_from_params, format_options
from softlabels.store import (
    Encoding,
    LabelStore,
    Layout,
    StoreHeader,
    StoreWriter,
    WriteSummary,
    default_chunk_rows,
    open_store,
)

SCHEDULERS = ("threads", "processes", "synchronous")
CONVERSION = "convert"
# Keys of a conversion record that must agree for a resumed conversion to continue a store.
_RECORD_IDENTITY = ("operation", "source_encoding", "encoding")


@dataclass(frozen=True)
class ConvertSummary(WriteSummary):
    """What a conversion did."""

    source: str
    encoding: str
    encoding_params: dict[str, Any]

    def describe(self) -> str:
        return (
            f"Converted {self.source} to {self.out}: {self.encoding} {self.encoding_params}, "
            f"{self.describe_rows()}, {self.seconds:.1f} s."
        )


def convert_store(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    to: str,
    k: int | None = None,
    samples: int | None = None,
    seed: int = 0,
    dtype: str = "float16",
    chunk_rows: int | None = None,
    chunks_per_shard: int = 1,
    scheduler: str = "threads",
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
    command: str | None = None,
) -> ConvertSummary:
    """Derive a store of another format from a complete full store, resumably and in parallel.

    Args:
        source: a complete store of format ``full``.
        out: where the new store goes (a resumed conversion continues a store made with the same settings).
        to: ``topk``, ``sampled`` or ``full`` (the last to change the value dtype).
        k: classes kept per row (``to="topk"`` only), ``1 <= k <= C``.
        samples: draws per row (``to="sampled"`` only), ``>= 1``.
        seed: seed of the draws (``to="sampled"``).
        dtype: value dtype for ``full`` and ``topk``: float16, bfloat16, float32 or int8.
        chunk_rows: rows per Zarr chunk of the new store; by default about 1 MiB per chunk, rounded
            to a multiple of the source's chunk rows so that every source chunk is decoded once.
        chunks_per_shard: chunks per unit of work.
        scheduler: the dask scheduler, one of :data:`SCHEDULERS`.
        workers: threads or processes (default: dask's, one per CPU).
        overwrite: replace a store at ``out`` made with other settings.
        progress: show dask's progress bar on stderr.
        command: the command line recorded in the conversion record.

    Raises:
        InvalidArgumentError: bad options (``k > C``, ``samples < 1``, unknown scheduler, ``out`` is
            ``source``) or a source that is not a full store.
        UnknownNameError: ``to`` is not a known format.
        IncompleteStoreError: the source has unwritten shards.
        StoreMismatchError: ``out`` holds a store made with other settings and ``overwrite`` is off.
    """
    started = time.perf_counter()
    _check_run_options(scheduler, workers, chunk_rows, chunks_per_shard)
    options = format_options(to, k=k, samples=samples, seed=seed, option="--to")
    encoding = build_encoding(to, dtype=dtype, **options)
    store = open_store(source)
    _check_source(store, encoding, out)
    header = _derived_header(store, encoding, chunk_rows, chunks_per_shard, command)
    writer = StoreWriter.open(out, header, encoding, overwrite=overwrite)
    _refuse_other_conversion(writer.header, header, writer.path)
    pending = writer.pending_shards()
    if pending:
        _run_shards(store.location, str(writer.path), writer.header, pending, scheduler, workers, progress)
    final = writer.mark_complete()
    size = writer.bytes_on_disk()
    return ConvertSummary(
        out=str(writer.path),
        num_rows=store.num_rows,
        num_classes=store.num_classes,
        shards_total=final.layout.num_shards,
        shards_written=len(pending),
        bytes_on_disk=size,
        seconds=time.perf_counter() - started,
        source=store.location,
        encoding=encoding.name,
        encoding_params=encoding.params(),
    )


def _check_run_options(
    scheduler: str, workers: int | None, chunk_rows: int | None, chunks_per_shard: int
) -> None:
    if scheduler not in SCHEDULERS:
        raise InvalidArgumentError(f"scheduler '{scheduler}' is not one of {', '.join(SCHEDULERS)}")
    for option, value in (
        ("--workers", workers),
        ("--chunk-rows", chunk_rows),
        ("--chunks-per-shard", chunks_per_shard),
    ):
        if value is not None and value < 1:
            raise InvalidArgumentError(f"{option} must be >= 1, got {value}")


def _check_source(store: LabelStore, encoding: Encoding, out: str | os.PathLike[str]) -> None:
    if store.layout.encoding != "full":
        raise InvalidArgumentError(
            f"{store.location} holds {store.layout.encoding} labels; convert derives "
            "compact stores from full stores only (what a compact store dropped "
            "cannot be recovered)"
        )
    encoding.fields(store.num_classes)  # refuses k > C before any work
    if Path(store.location).resolve() == Path(out).resolve():
        raise InvalidArgumentError(f"the output {out} is the source store itself; choose another OUT")


def _derived_header(
    store: LabelStore, encoding: Encoding, chunk_rows: int | None, chunks_per_shard: int, command: str | None
) -> StoreHeader:
    rows_per_chunk = chunk_rows or _aligned_chunk_rows(
        store.layout.chunk_rows, encoding.bytes_per_row(store.num_classes)
    )
    layout = Layout(
        encoding=encoding.name,
        encoding_params=encoding.params(),
        num_rows=store.num_rows,
        num_classes=store.num_classes,
        chunk_rows=rows_per_chunk,
        shard_rows=rows_per_chunk * chunks_per_shard,
    )
    record = {
        "operation": CONVERSION,
        "source": _absolute(store.location),
        "source_encoding": {"name": store.layout.encoding, "params": store.layout.encoding_params},
        "encoding": {"name": encoding.name, "params": encoding.params()},
        "chunk_rows": layout.chunk_rows,
        "shard_rows": layout.shard_rows,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "softlabels": __version__,
        "command": command or f"softlabels.convert_store({store.location!r}, to={encoding.name!r})",
    }
    provenance = replace(store.provenance, derived_from=(*store.provenance.derived_from, record))
    return StoreHeader(layout=layout, provenance=provenance)


def _absolute(location: str) -> str:
    """A local path made absolute, so the record still names the source when read elsewhere; URLs as given."""
    return location if "://" in location else str(Path(location).resolve())


def _aligned_chunk_rows(source_chunk_rows: int, bytes_per_row: int) -> int:
    """About 1 MiB per chunk, as ``generate`` picks, but a multiple of the source's chunk rows."""
    return source_chunk_rows * max(1, default_chunk_rows(bytes_per_row) // source_chunk_rows)


def _refuse_other_conversion(existing: StoreHeader, wanted: StoreHeader, path: Path) -> None:
    """A resumed conversion must continue one from the same kind of source (not float16 after float32)."""
    old, new = existing.provenance.derived_from, wanted.provenance.derived_from
    if len(old) != len(new) or any(
        a.get(key) != b.get(key) for a, b in zip(old, new, strict=True) for key in _RECORD_IDENTITY
    ):
        raise StoreMismatchError(
            f"{path} holds labels derived otherwise (store: {list(old)}; this run: "
            f"{list(new)}); pass --overwrite to replace it"
        )


def _run_shards(
    source: str,
    out: str,
    header: StoreHeader,
    shards: list[int],
    scheduler: str,
    workers: int | None,
    progress: bool,
) -> None:
    from dask.base import compute
    from dask.delayed import delayed
    from dask.diagnostics.progress import ProgressBar

    tasks = [delayed(convert_shard)(source, out, header, shard) for shard in shards]
    options: dict[str, Any] = {"scheduler": scheduler}
    if workers is not None and scheduler != "synchronous":
        options["num_workers"] = workers
    # dask ships without type annotations for these calls.
    if progress:
        with ProgressBar(minimum=1.0, out=sys.stderr):  # type: ignore[no-untyped-call]
            compute(*tasks, **options)  # type: ignore[no-untyped-call]
    else:
        compute(*tasks, **options)  # type: ignore[no-untyped-call]


def convert_shard(source: str, out: str, header: StoreHeader, shard: int) -> int:
    """Encode one shard of ``out`` from ``source`` and record it; one dask task (picklable arguments only)."""
    layout = header.layout
    encoding = encoding_from_params(layout.encoding, layout.encoding_params)
    start, stop = layout.shard_bounds(shard)
    rows = open_store(source).read_rows(start, stop)
    fields = encoding.encode(rows.fields["logits"], start)
    StoreWriter(Path(out), header, encoding).write_shard(shard, fields, rows.targets)
    return shard
