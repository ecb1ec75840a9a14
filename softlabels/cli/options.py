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
