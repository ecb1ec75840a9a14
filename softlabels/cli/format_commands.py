"""``softlabels convert`` and ``softlabels inspect``: compact label formats and what they cost."""

from __future__ import annotations

import json

import click

from softlabels import defaults
from softlabels.cli.main import cli
from softlabels.cli.options import chunk_options, format_options, invocation, scheduler_options


@cli.command()
@click.argument("store")
@click.argument("out")
@click.option(
    "--to",
    "to",
    type=click.Choice(defaults.LABEL_FORMATS),
    required=True,
    help="Format of the new store (full: only to change --dtype).",
)
@format_options("--to")
@chunk_options("Rows per Zarr chunk (default: about 1 MiB, a multiple of the source's chunk rows).")
@scheduler_options
@click.option("--overwrite", is_flag=True, help="Replace a store at OUT made with other settings.")
def convert(
    store: str,
    out: str,
    to: str,
    k: int | None,
    samples: int | None,
    seed: int,
    dtype: str,
    chunk_rows: int | None,
    chunks_per_shard: int,
    scheduler: str,
    workers: int | None,
    overwrite: bool,
) -> None:
    """Derive a compact store OUT from the full store STORE without running the teacher again."""
    from softlabels.format.encoding_spec import EncodingSpec

    encoding = EncodingSpec.create(to, dtype=dtype, k=k, samples=samples, seed=seed)
    from softlabels.processing.convert import convert_store  # zarr and dask: once the options are valid

    summary = convert_store(
        store,
        out,
        encoding,
        chunk_rows=chunk_rows,
        chunks_per_shard=chunks_per_shard,
        scheduler=scheduler,
        workers=workers,
        overwrite=overwrite,
        progress=True,
        command=invocation(),
    )
    click.echo(summary.describe())


@cli.command()
@click.argument("store")
@click.option("--reference", default=None, help="A full store of the same teacher, data and temperature.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def inspect(store: str, reference: str | None, as_json: bool) -> None:
    """Bytes per sample, compression, teacher accuracy, entropy and calibration; fidelity to a full store."""
    from softlabels.store.inspect import format_inspection, inspect_store

    report = inspect_store(store, reference)
    click.echo(json.dumps(report, indent=2) if as_json else format_inspection(report))
