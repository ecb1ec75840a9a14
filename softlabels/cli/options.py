"""Option groups shared by several commands, so every command spells them the same way."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from softlabels import defaults

F = TypeVar("F", bound=Callable[..., Any])


def apply_options(options: list[Callable[[F], F]], func: F) -> F:
    """Decorate ``func`` with ``options`` so that they list in the given order."""
    for option in reversed(options):
        func = option(func)
    return func


def format_options(switch: str) -> Callable[[F], F]:
    """``--k``, ``--samples``, ``--seed`` and ``--dtype``; ``switch`` (``--format`` or ``--to``) picks the format."""

    def decorate(func: F) -> F:
        return apply_options(
            [
                click.option("--k", type=int, default=None, help=f"Classes kept per row ({switch} topk)."),
                click.option("--samples", type=int, default=None, help=f"Draws per row ({switch} sampled)."),
                click.option(
                    "--seed",
                    type=int,
                    default=defaults.SAMPLE_SEED,
                    show_default=True,
                    help=f"Seed of the draws ({switch} sampled).",
                ),
                click.option(
                    "--dtype",
                    type=click.Choice(defaults.VALUE_DTYPES),
                    default=defaults.VALUE_DTYPE,
                    show_default=True,
                    help="Stored value type for full and topk (int8: 8 bits with a per-row scale and offset).",
                ),
            ],
            func,
        )

    return decorate


def dataset_options(func: F) -> F:
    """``--dataset``, ``--split`` and ``--data-root``."""
    return apply_options(
        [
            click.option(
                "--dataset",
                required=True,
                help="digits | imagefolder:ROOT | torchvision:NAME | module:callable | file.py:callable",
            ),
            click.option(
                "--split", default=defaults.TRAIN_SPLIT, show_default=True, help="Which split of the dataset."
            ),
            click.option(
                "--data-root",
                default=None,
                help="Root folder for torchvision:NAME datasets (never downloads).",
            ),
        ],
        func,
    )


def num_workers_option() -> Callable[[F], F]:
    """``--num-workers``."""
    return click.option(
        "--num-workers",
        type=int,
        default=defaults.NUM_WORKERS,
        show_default=True,
        help="DataLoader worker processes.",
    )


def device_option() -> Callable[[F], F]:
    """``--device``."""
    return click.option(
        "--device",
        default=defaults.DEVICE,
        show_default=True,
        help=" | ".join((*defaults.DEVICES, "cuda:N")),
    )


def precision_option(help_text: str) -> Callable[[F], F]:
    """``--precision``."""
    return click.option(
        "--precision",
        type=click.Choice(defaults.PRECISIONS),
        default=defaults.PRECISION,
        show_default=True,
        help=help_text,
    )


def device_options(func: F) -> F:
    """``--batch-size``, ``--num-workers`` and ``--device`` of ``generate``."""
    return apply_options(
        [
            click.option("--batch-size", type=int, default=defaults.GENERATE_BATCH_SIZE, show_default=True),
            num_workers_option(),
            device_option(),
        ],
        func,
    )


def chunk_options(
    chunk_rows_help: str = "Rows per Zarr chunk (default: about 1 MiB per chunk).",
) -> Callable[[F], F]:
    """``--chunk-rows`` and ``--chunks-per-shard`` of every command that writes a store."""

    def decorate(func: F) -> F:
        return apply_options(
            [
                click.option("--chunk-rows", type=int, default=None, help=chunk_rows_help),
                click.option(
                    "--chunks-per-shard",
                    type=int,
                    default=defaults.CHUNKS_PER_SHARD,
                    show_default=True,
                    help="Chunks per unit of work.",
                ),
            ],
            func,
        )

    return decorate


def scheduler_options(func: F) -> F:
    """``--scheduler`` and ``--workers`` of the commands that run shards on dask (``convert``, ``merge``)."""
    return apply_options(
        [
            click.option(
                "--scheduler",
                type=click.Choice(defaults.SCHEDULERS),
                default=defaults.SCHEDULER,
                show_default=True,
                help="dask scheduler running the shards.",
            ),
            click.option(
                "--workers", type=int, default=None, help="Threads or processes (default: one per CPU)."
            ),
        ],
        func,
    )


def invocation() -> str:
    """The command line as typed, recorded in provenance."""
    import shlex
    import sys

    return shlex.join(["softlabels", *sys.argv[1:]])
