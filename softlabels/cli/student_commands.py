"""``softlabels train-student`` and ``softlabels train-teacher``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from softlabels.cli.main import cli
from softlabels.cli.options import apply_options, dataset_options, invocation

F = TypeVar("F", bound=Callable[..., Any])


def _training_options(func: F) -> F:
    """The options both training commands share, in the order ``--help`` lists them."""
    return apply_options(
        [
            click.option(
                "--val-split",
                default="test",
                show_default=True,
                help="Held-out split evaluated after every epoch.",
            ),
            click.option("--epochs", type=int, required=True, help="Passes over the training split."),
            click.option("--batch-size", type=int, default=128, show_default=True),
            click.option(
                "--optimizer",
                type=click.Choice(["sgd", "adamw"]),
                default="sgd",
                show_default=True,
                help="SGD with Nesterov momentum 0.9, or AdamW; both with a cosine schedule.",
            ),
            click.option(
                "--lr",
                type=float,
                default=None,
                help="Learning rate [default: 0.05 for sgd, 1e-3 for adamw].",
            ),
            click.option("--weight-decay", type=float, default=5e-4, show_default=True),
            click.option(
                "--num-workers", type=int, default=0, show_default=True, help="DataLoader worker processes."
            ),
            click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N"),
            click.option(
                "--precision",
                type=click.Choice(["fp32", "bf16", "fp16"]),
                default="fp32",
                show_default=True,
                help="Compute precision (mixed precision for bf16/fp16).",
            ),
            click.option(
                "--seed",
                type=int,
                default=0,
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
@click.option("--student", required=True, help="Built-in name, torchvision architecture, or a plug-in.")
@click.option("--student-weights", default=None, help="Start from these weights (state_dict or checkpoint).")
@click.option(
    "--alpha",
    type=float,
    default=None,
    help="Weight of the distillation term; 1 - alpha weighs the hard-label loss [default: 0.9].",
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
    default=4,
    show_default=True,
    help="Store chunks read and shuffled together when the labels are streamed.",
)
@click.option(
    "--memory-budget-mb",
    type=int,
    default=256,
    show_default=True,
    help="Labels up to this size are read whole instead of streamed.",
)
@_training_options
def train_student(**options: Any) -> None:
    """Train a student from stored soft labels and the raw data, never running the teacher."""
    from softlabels.training.train import TrainConfig
    from softlabels.training.train import train_student as run

    summary = run(TrainConfig(command=invocation(), **options))
    click.echo(summary.describe())


@cli.command("train-teacher")
@dataset_options
@click.option("--teacher", required=True, help="Built-in name, torchvision architecture, or a plug-in.")
@click.option("--teacher-weights", default=None, help="Start from these weights (state_dict or checkpoint).")
@_training_options
def train_teacher(**options: Any) -> None:
    """Train a teacher with cross-entropy; its --out/final.pt feeds generate --teacher-weights."""
    from softlabels.training.train import TeacherConfig
    from softlabels.training.train import train_teacher as run

    summary = run(TeacherConfig(command=invocation(), **options))
    click.echo(summary.describe())
