"""Deriving a compact store (top-k, sampled or requantised full) from a full one (``softlabels convert``).

The teacher is not run again: every shard of the new store is read from the full store, decoded
to float32 ``logits / T`` rows and encoded exactly as ``generate`` encodes teacher outputs, so a
conversion of a float32 full store equals direct generation with the same settings. Stores with
label axes (views, token positions) convert cell by cell and keep their axes.

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

The conversion record names the source's run id (and creation time): a conversion resumes only
from the very source run it started from, never from a source regenerated in between.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from softlabels import __version__
from softlabels.defaults import (
    CHUNKS_PER_SHARD,
    SCHEDULER,
    SCHEDULERS,  # noqa: F401  (the schedulers convert_store accepts)
)
from softlabels.errors import InvalidArgumentError, StoreConflictError
from softlabels.format.encoding_spec import EncodingSpec
from softlabels.format.encodings import cell_encoding
from softlabels.processing.shards import absolute_location, check_run_options, write_pending_shards
from softlabels.store import (
    Encoding,
    LabelStore,
    Layout,
    StoreHeader,
    StoreWriter,
    WriteSummary,
    default_chunk_rows,
    open_store,
    read_header,
)

CONVERSION = "convert"


@dataclass(frozen=True)
class ConvertSummary(WriteSummary):
    """What a conversion did."""

    source: str
    encoding: EncodingSpec

    def describe(self) -> str:
        return (
            f"Converted {self.source} to {self.out}: {self.encoding.describe()}, "
            f"{self.describe_rows()}, {self.seconds:.1f} s."
        )


def convert_store(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    encoding: EncodingSpec,
    *,
    chunk_rows: int | None = None,
    chunks_per_shard: int = CHUNKS_PER_SHARD,
    scheduler: str = SCHEDULER,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
    command: str | None = None,
) -> ConvertSummary:
    """Derive a store of another format from a complete full store, resumably and in parallel.

    Args:
        source: a complete store of format ``full``.
        out: where the new store goes (a resumed conversion continues a store made with the same
            settings from the same source run).
        encoding: the new store's format, e.g. ``EncodingSpec.create("topk", k=5)`` (``k <= C``), or
            ``full`` with another value dtype.
        chunk_rows: rows per Zarr chunk of the new store; by default about 1 MiB per chunk, rounded
            to a multiple of the source's chunk rows so that every source chunk is decoded once.
        chunks_per_shard: chunks per unit of work.
        scheduler: the dask scheduler, one of :data:`SCHEDULERS`, or a dask.distributed cluster:
            ``local:N`` (N worker processes started here) or a scheduler address (``tcp://HOST:PORT``).
        workers: threads or processes of ``threads``/``processes`` (default: dask's, one per CPU).
        overwrite: replace a store at ``out`` made with other settings.
        progress: show dask's progress bar on stderr.
        command: the command line recorded in the conversion record.

    Raises:
        InvalidArgumentError: bad options (``k > C``, unknown scheduler, ``out`` is ``source``) or a
            source that is not a full store.
        IncompleteStoreError: the source has unwritten shards.
        StoreMismatchError: ``out`` holds a store made with other settings, or derived from another
            run of the source, and ``overwrite`` is off.
        StoreConflictError: the source or the output was replaced while converting.
        ClusterError: a cluster scheduler cannot be reached, or keeps losing the workers of a shard.
    """
    started = time.perf_counter()
    check_run_options(scheduler, workers, chunk_rows, chunks_per_shard)
    store = open_store(source)
    row_encoding = encoding.build()
    _check_source(store, row_encoding, out)
    header = _derived_header(store, encoding, row_encoding, chunk_rows, chunks_per_shard, command)
    writer = StoreWriter.open(out, header, row_encoding, overwrite=overwrite)
    pending = write_pending_shards(
        writer,
        convert_shard,
        # Absolute locations: a cluster's workers may run in another folder or on another host.
        lambda shard: (
            absolute_location(store.location),
            absolute_location(str(writer.path)),
            writer.header,
            shard,
        ),
        scheduler=scheduler,
        workers=workers,
        progress=progress,
        desc="convert",
    )
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
        rows_written=sum(stop - start for start, stop in map(final.layout.shard_bounds, pending)),
        source=store.location,
        encoding=encoding,
    )


def _check_source(store: LabelStore, encoding: Encoding, out: str | os.PathLike[str]) -> None:
    if store.layout.encoding != "full":
        raise InvalidArgumentError(
            f"{store.location} holds {store.layout.encoding} labels; convert derives "
            "compact stores from full stores only (what a compact store dropped "
            "cannot be recovered)"
        )
    encoding.fields(store.num_classes)  # refuses k > C before any work
    if absolute_location(store.location) == absolute_location(os.fspath(out)):
        raise InvalidArgumentError(f"the output {out} is the source store itself; choose another OUT")


def _derived_header(
    store: LabelStore,
    encoding: EncodingSpec,
    row_encoding: Encoding,
    chunk_rows: int | None,
    chunks_per_shard: int,
    command: str | None,
) -> StoreHeader:
    # Chunks are sized by whole samples: every view and position of a row travels with it.
    sample_encoding = cell_encoding(row_encoding, store.layout.label_axes)
    rows_per_chunk = chunk_rows or _aligned_chunk_rows(
        store.layout.chunk_rows, sample_encoding.bytes_per_row(store.num_classes)
    )
    layout = Layout(
        encoding=row_encoding.name,
        encoding_params=row_encoding.params(),
        num_rows=store.num_rows,
        num_classes=store.num_classes,
        chunk_rows=rows_per_chunk,
        shard_rows=rows_per_chunk * chunks_per_shard,
        views=store.layout.views,
        positions=store.layout.positions,
        view_recipe=store.layout.view_recipe,
        view_seed=store.layout.view_seed,
    )
    record = {
        "operation": CONVERSION,
        "source": absolute_location(store.location),
        # Which run of the source: a source regenerated in between has another run id.
        "source_run_id": store.header.run_id,
        "source_created": store.provenance.created,
        "source_encoding": {"name": store.layout.encoding, "params": store.layout.encoding_params},
        "encoding": {"name": row_encoding.name, "params": row_encoding.params()},
        "chunk_rows": layout.chunk_rows,
        "shard_rows": layout.shard_rows,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "softlabels": __version__,
        "command": command or f"softlabels.convert_store({store.location!r}, {encoding.describe()!r})",
    }
    provenance = replace(store.provenance, derived_from=(*store.provenance.derived_from, record))
    return StoreHeader(layout=layout, provenance=provenance)


def _aligned_chunk_rows(source_chunk_rows: int, bytes_per_row: int) -> int:
    """About 1 MiB per chunk, as ``generate`` picks, but a multiple of the source's chunk rows."""
    return source_chunk_rows * max(1, default_chunk_rows(bytes_per_row) // source_chunk_rows)


def convert_shard(source: str, out: str, header: StoreHeader, shard: int) -> int:
    """Encode one shard of ``out`` from ``source`` and record it; one dask task (picklable arguments only).

    Raises:
        StoreConflictError: the source is no longer the run the conversion started from.
    """
    layout = header.layout
    encoding = layout.encoding_spec.build()
    start, stop = layout.shard_bounds(shard)
    expected = header.provenance.derived_from[-1]["source_run_id"]
    # The whole source was checked complete when the conversion started; its run id, read before and
    # after the rows, proves these rows still come from that run (run ids never repeat).
    opened = open_store(source, allow_incomplete=True)
    _refuse_other_run(source, expected, opened.header.run_id)
    rows = opened.read_rows(start, stop)
    _refuse_other_run(source, expected, read_header(source).run_id)
    writer = StoreWriter(out, header, encoding)
    # The writer's encoding takes whole samples ([n, *label_axes, C]) and keys cells as generate does.
    # Views keep the parameters that make them replayable.
    view_params = None if layout.view_recipe is None else opened.read_view_params(start, stop)
    writer.write_shard(
        shard, writer.encoding.encode(rows.fields["logits"], start), rows.targets, view_params=view_params
    )
    return shard


def _refuse_other_run(source: str, run_id: str | None, current: str | None) -> None:
    if current != run_id:
        raise StoreConflictError(
            f"the source {source} was replaced while it was being converted (run id {run_id} became "
            f"{current}); the conversion stopped"
        )
