"""``softlabels train-student`` and ``softlabels train-teacher``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from softlabels import defaults
from softlabels.cli.main import cli
from softlabels.cli.options import (
    apply_options,
    dataset_options,
    device_option,
    invocation,
    num_workers_option,
    precision_option,
    seq_len_option,
)

F = TypeVar("F", bound=Callable[..., Any])

_LEARNING_RATES = ", ".join(f"{rate:g} for {name}" for name, rate in defaults.LEARNING_RATES.items())


def _training_options(func: F) -> F:
    """The options both training commands share, in the order ``--help`` lists them."""
    return apply_options(
        [
            click.option(
                "--val-split",
                default=defaults.VAL_SPLIT,
                show_default=True,
                help="Held-out split evaluated after every epoch.",
            ),
            click.option("--epochs", type=int, required=True, help="Passes over the training split."),
            click.option("--batch-size", type=int, default=defaults.TRAIN_BATCH_SIZE, show_default=True),
            click.option(
                "--optimizer",
                type=click.Choice(defaults.OPTIMIZERS),
                default=defaults.OPTIMIZER,
                show_default=True,
                help=f"SGD with Nesterov momentum {defaults.SGD_MOMENTUM:g}, or AdamW; both with a cosine schedule.",
            ),
            click.option(
                "--lr",
                type=float,
                default=None,
                help=f"Learning rate [default: {_LEARNING_RATES}].",
            ),
            click.option("--weight-decay", type=float, default=defaults.WEIGHT_DECAY, show_default=True),
            num_workers_option(),
            device_option(),
            precision_option("Compute precision (mixed precision for bf16/fp16)."),
            click.option(
                "--seed",
                type=int,
                default=defaults.SEED,
                show_default=True,
                help="Seeds the initial weights and the data order.",
            ),
            click.option(
                "--augment",
                is_flag=True,
                help="Random crop + flip of image-file samples (off: stored labels describe plain samples).",
            ),
            click.option(
                "--out",
                required=True,
                help="Run folder: config, metrics, last/best/final checkpoints; re-run to resume.",
            ),
            click.option("--overwrite", is_flag=True, help="Start over in an --out that holds another run."),
        ],
        func,
    )


@cli.command("train-student")
@click.option("--labels", default=None, help="Label store made by generate (optional only with --no-kd).")
@dataset_options
@seq_len_option()
@click.option("--student", required=True, help="Built-in name, torchvision architecture, or a plug-in.")
@click.option("--student-weights", default=None, help="Start from these weights (state_dict or checkpoint).")
@click.option(
    "--alpha",
    type=float,
    default=None,
    help=f"Weight of the distillation term; 1 - alpha weighs the hard-label loss [default: {defaults.ALPHA:g}].",
)
@click.option(
    "--temperature",
    type=float,
    default=None,
    help="Distillation temperature [default: the store's]; full stores are re-tempered to it.",
)
@click.option("--no-kd", is_flag=True, help="Hard labels only, through the same loader: the baseline.")
@click.option(
    "--buffer-chunks",
    type=int,
    default=defaults.BUFFER_CHUNKS,
    show_default=True,
    help="Store chunks read and shuffled together when the labels are streamed.",
)
@click.option(
    "--memory-budget-mb",
    type=int,
    default=defaults.MEMORY_BUDGET_MB,
    show_default=True,
    help="Labels up to this size are read whole instead of streamed.",
)
@_training_options
def train_student(**options: Any) -> None:
    """Train a student from stored soft labels and the raw data, never running the teacher."""
    from softlabels.training.config import TrainConfig

    config = TrainConfig(command=invocation(), **options)  # checks every setting before torch is imported
    from softlabels.training.distributed import from_environment
    from softlabels.training.train import train_student as train

    summary = train(config)
    if from_environment().is_main:  # under torchrun, one summary: rank 0's
        click.echo(summary.describe())


@cli.command("train-teacher")
@dataset_options
@seq_len_option()
@click.option("--teacher", required=True, help="Built-in name, torchvision architecture, or a plug-in.")
@click.option("--teacher-weights", default=None, help="Start from these weights (state_dict or checkpoint).")
@click.option(
    "--partition",
    default=None,
    metavar="I/N",
    help="Train on part I (from 1) of N disjoint, fixed parts of the split (PATE teachers).",
)
@_training_options
def train_teacher(**options: Any) -> None:
    """Train a teacher with cross-entropy; its --out/final.pt feeds generate --teacher-weights."""
    from softlabels.training.config import TeacherConfig

    config = TeacherConfig(command=invocation(), **options)  # checks every setting before torch is imported
    from softlabels.training.distributed import from_environment
    from softlabels.training.train import train_teacher as train

    summary = train(config)
    if from_environment().is_main:  # under torchrun, one summary: rank 0's
        click.echo(summary.describe())
