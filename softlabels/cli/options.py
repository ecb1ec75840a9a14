"""Option groups shared by several commands, so every command spells them the same way."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def apply_options(options: list[Callable[[F], F]], func: F) -> F:
    """Decorate ``func`` with ``options`` so that they list in the given order."""
    for option in reversed(options):
        func = option(func)
    return func


# Copies of the library's names, so that building the CLI imports neither torch nor zarr (tests compare them).
LABEL_FORMATS = ["full", "topk", "sampled"]
VALUE_DTYPES = ["float16", "bfloat16", "float32", "int8"]


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
                    default=0,
                    show_default=True,
                    help=f"Seed of the draws ({switch} sampled).",
                ),
                click.option(
                    "--dtype",
                    type=click.Choice(VALUE_DTYPES),
                    default="float16",
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
            click.option("--split", default="train", show_default=True, help="Which split of the dataset."),
            click.option(
                "--data-root",
                default=None,
                help="Root folder for torchvision:NAME datasets (never downloads).",
            ),
        ],
        func,
    )


def device_options(func: F) -> F:
    """``--batch-size``, ``--num-workers`` and ``--device``."""
    return apply_options(
        [
            click.option("--batch-size", type=int, default=256, show_default=True),
            click.option(
                "--num-workers", type=int, default=0, show_default=True, help="DataLoader worker processes."
            ),
            click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N"),
        ],
        func,
    )


def invocation() -> str:
    """The command line as typed, recorded in provenance."""
    import shlex
    import sys

    return shlex.join(["softlabels", *sys.argv[1:]])
