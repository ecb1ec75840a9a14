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
                help="digits | imagefolder:ROOT | torchvision:NAME | text:ROOT | module:callable | file.py:callable",
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


def seq_len_option() -> Callable[[F], F]:
    """``--seq-len``: the window length of a text dataset."""
    return click.option(
        "--seq-len",
        type=int,
        default=None,
        help="Tokens per sample of a text dataset (text:ROOT needs it): windows of L input tokens and their L next tokens.",
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


_CLUSTER_HELP = (
    "local:N (a dask.distributed cluster of N worker processes here) | tcp://HOST:PORT (an existing cluster)"
)


def _checked_scheduler(in_process: tuple[str, ...]) -> Callable[[click.Context, click.Parameter, str], str]:
    def check(_context: click.Context, _parameter: click.Parameter, value: str) -> str:
        try:
            return defaults.check_scheduler(value, in_process)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None

    return check


def scheduler_options(func: F) -> F:
    """``--scheduler`` and ``--workers`` of the commands that run shards on dask (``convert``, ``merge``)."""
    return apply_options(
        [
            click.option(
                "--scheduler",
                default=defaults.SCHEDULER,
                show_default=True,
                callback=_checked_scheduler(defaults.SCHEDULERS),
                help=f"dask scheduler running the shards: {' | '.join(defaults.SCHEDULERS)} | {_CLUSTER_HELP}.",
            ),
            click.option(
                "--workers",
                type=int,
                default=None,
                help="Threads or processes of threads/processes (default: one per CPU).",
            ),
        ],
        func,
    )


def generate_scheduler_option() -> Callable[[F], F]:
    """``--scheduler`` of ``generate``: the teacher runs in this process, or one shard per task on a cluster."""
    return click.option(
        "--scheduler",
        default=defaults.GENERATE_SCHEDULER,
        show_default=True,
        callback=_checked_scheduler((defaults.IN_PROCESS,)),
        help=f"Where the teacher runs: {defaults.IN_PROCESS} | {_CLUSTER_HELP}; on a cluster each worker "
        "loads the teacher once and computes and writes whole shards.",
    )


def invocation() -> str:
    """The command line as typed, recorded in provenance."""
    import shlex
    import sys

    return shlex.join(["softlabels", *sys.argv[1:]])
