"""``softlabels generate`` and ``softlabels info``."""

from __future__ import annotations

import json
from typing import Any

import click

from softlabels import defaults
from softlabels.cli.main import cli
from softlabels.cli.options import (
    chunk_options,
    dataset_options,
    device_options,
    format_options,
    generate_scheduler_option,
    invocation,
    precision_option,
    seq_len_option,
)


@cli.command()
@dataset_options
@seq_len_option()
@click.option("--teacher", required=True, help="Built-in name, torchvision architecture, or a plug-in.")
@click.option("--teacher-weights", default=None, help="state_dict or softlabels checkpoint file.")
@click.option("--random-weights", is_flag=True, help="Allow a built-in/torchvision teacher without weights.")
@click.option("--temperature", type=float, required=True, help="Stored rows are teacher logits / T.")
@click.option("--out", required=True, help="Store location (a folder, conventionally NAME.zarr).")
@device_options
@precision_option("Teacher compute precision (mixed precision for bf16/fp16).")
@click.option(
    "--format",
    "label_format",
    type=click.Choice(defaults.LABEL_FORMATS),
    default=defaults.LABEL_FORMAT,
    show_default=True,
    help="full logits, the top-k per row, or classes sampled from the teacher distribution.",
)
@format_options("--format")
@click.option(
    "--views",
    type=click.IntRange(min=1),
    default=None,
    help="Store V augmented views per sample (label rows and each view's crop and flip) "
    "for students that replay them exactly.",
)
@click.option(
    "--augment",
    default=None,
    help=f"Recipe of the views: crop=LO:HI[:RATIO_LO:RATIO_HI] (random-resized crop of that area "
    f"fraction), flip; comma-separated. Needs --views. [default: {defaults.VIEW_RECIPE}]",
)
@click.option(
    "--view-seed",
    type=click.IntRange(min=0, max=2**64 - 1),
    default=defaults.VIEW_SEED,
    show_default=True,
    help="Seed of the views' stream, keyed by (seed, sample, view).",
)
@chunk_options()
@generate_scheduler_option()
@click.option("--overwrite", is_flag=True, help="Replace a store made with other settings.")
def generate(
    label_format: str, dtype: str, k: int | None, samples: int | None, seed: int, **options: Any
) -> None:
    """Run a teacher over a dataset once and store its temperature-scaled logits."""
    from softlabels.format.encoding_spec import EncodingSpec
    from softlabels.processing.generation.config import GenerateConfig

    encoding = EncodingSpec.create(label_format, dtype=dtype, k=k, samples=samples, seed=seed)
    config = GenerateConfig(command=invocation(), encoding=encoding, **options)
    from softlabels.processing.generation import generate as run  # torch: once the options are valid

    summary = run(config)
    click.echo(summary.describe())


@cli.command()
@click.argument("store")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(store: str, as_json: bool) -> None:
    """Show a store's provenance, shape, format and completeness."""
    from softlabels.store.info import describe_store, format_description

    description = describe_store(store)
    click.echo(json.dumps(description, indent=2) if as_json else format_description(description))
