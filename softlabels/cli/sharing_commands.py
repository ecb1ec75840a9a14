"""``softlabels ls``, ``verify``, ``export`` and ``import``: sharing stores between teams."""

from __future__ import annotations

import json
from typing import Any

import click

from softlabels import defaults
from softlabels.cli.main import cli
from softlabels.cli.options import (
    chunk_options,
    dataset_options,
    format_options,
    invocation,
    seq_len_option,
)
from softlabels.errors import InvalidArgumentError, StoreCorruptError


@cli.command(name="ls")
@click.argument("location")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_command(location: str, as_json: bool) -> None:
    """List the label stores under LOCATION (a local folder, searched recursively), damaged ones with why."""
    from softlabels.store.catalogue import format_catalogue, list_stores

    entries = list_stores(location)
    if as_json:
        click.echo(json.dumps([entry.to_json() for entry in entries], indent=2))
    else:
        click.echo(format_catalogue(entries, location))


@cli.command()
@click.argument("store")
@click.option("--dataset", default=None, help="Also check that the store belongs to this dataset.")
@click.option("--split", default=None, help=f"Split of --dataset (default: {defaults.TRAIN_SPLIT}).")
@click.option(
    "--data-root", default=None, help="Root folder for torchvision:NAME datasets (never downloads)."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def verify(store: str, dataset: str | None, split: str | None, data_root: str | None, as_json: bool) -> None:
    """Read every chunk of STORE and check checksums, shapes, values and completeness; exit 1 naming each problem."""
    if dataset is None and (split is not None or data_root is not None):
        raise InvalidArgumentError("--split and --data-root apply only with --dataset")
    from softlabels.store.verify import verify_store

    data = None
    if dataset is not None:
        from softlabels.format.identity import dataset_info
        from softlabels.sources import load_dataset  # torch: only to describe the data

        data = dataset_info(load_dataset(dataset, split or defaults.TRAIN_SPLIT, data_root=data_root))
    report = verify_store(store, data)
    click.echo(json.dumps(report.to_json(), indent=2) if as_json else report.describe())
    if not report.ok:
        count = len(report.problems)
        raise StoreCorruptError(
            f"{store} failed verification: {count} problem{'s' if count != 1 else ''} (listed above)"
        )


@cli.command()
@click.argument("store")
@click.argument("out")
@click.option("--overwrite", is_flag=True, help="Replace an existing OUT file.")
def export(store: str, out: str, overwrite: bool) -> None:
    """Write every row of STORE, decoded, with its targets and header into the .npz file OUT."""
    from softlabels.store.export import export_store

    click.echo(export_store(store, out, overwrite=overwrite).describe())


@cli.command(name="import")
@click.argument("source")
@dataset_options
@seq_len_option()
@click.option("--out", required=True, help="Store location (a folder, conventionally NAME.zarr).")
@click.option(
    "--teacher-name", required=True, help="The teacher that made the labels (recorded, never loaded)."
)
@click.option("--temperature", type=float, required=True, help="The temperature T the labels are at.")
@click.option(
    "--kind",
    type=click.Choice(defaults.IMPORT_KINDS),
    default=None,
    help="What the rows of a .npy/.npz hold: teacher logits (divided by T), logits already divided by T "
    "(what export writes), or log-probabilities at T. Required for .npy/.npz.",
)
@click.option(
    "--format",
    "label_format",
    type=click.Choice(defaults.LABEL_FORMATS),
    default=None,
    help="Format of the store (default: full for .npy/.npz, topk for .jsonl).",
)
@format_options("--format")
@chunk_options()
@click.option("--overwrite", is_flag=True, help="Replace a store made with other settings.")
def import_command(
    source: str,
    kind: str | None,
    label_format: str | None,
    k: int | None,
    samples: int | None,
    seed: int,
    dtype: str,
    temperature: float,
    **options: Any,
) -> None:
    """Store labels of a served or foreign teacher (.npy/.npz rows or .jsonl top log-probabilities) for a dataset."""
    from softlabels.format.encoding_spec import EncodingSpec
    from softlabels.processing.imports import JSONL_SUFFIX, read_source

    top_logprobs = source.endswith(JSONL_SUFFIX)
    if kind is None and not top_logprobs:
        raise InvalidArgumentError(f"--kind is required for {source}: say what its rows hold")
    rows = read_source(source, kind, temperature, k=k if top_logprobs else None)
    encoding = EncodingSpec.create(
        label_format or ("topk" if top_logprobs else "full"),
        dtype=dtype,
        k=rows.k if top_logprobs else k,
        samples=samples,
        seed=seed,
    )
    from softlabels.processing.imports import import_labels  # torch: once the source is sound

    summary = import_labels(rows, temperature=temperature, encoding=encoding, command=invocation(), **options)
    click.echo(summary.describe())
