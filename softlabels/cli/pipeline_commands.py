"""``softlabels run``: a whole pipeline (teacher, label store, students, report) from one TOML file."""

from __future__ import annotations

import click

from softlabels.cli.main import cli
from softlabels.cli.options import invocation


@cli.command("run")
@click.argument("pipeline", required=False, metavar="[PIPELINE.toml]")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a setting of the file, e.g. --set students.kd.epochs=3 or "
    "--set dataset.root=/data/cifar10 (the value is read as TOML when it is TOML, "
    "else as a string). Repeatable.",
)
@click.option(
    "--out", default=None, help="Output folder [default: the file's pipeline.output, else data/<name>]."
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Start every stage over, replacing what earlier runs left (the label store too).",
)
def run(pipeline: str | None, overrides: tuple[str, ...], out: str | None, overwrite: bool) -> None:
    """Train the teacher, generate its soft labels, train the KD and baseline students, and report.

    Without PIPELINE.toml, runs the built-in digits pipeline (about a minute on 2 CPU cores).
    Finished stages are reused when run again; the results table is printed and written to
    report.json and report.png in the output folder.
    """
    from softlabels.errors import PipelineError
    from softlabels.pipelines.data import check_inputs
    from softlabels.pipelines.spec import Override, load_pipeline, parse_override

    # The file, the overrides and the inputs are checked before torch is imported.
    try:
        settings = [parse_override(item, origin="--set") for item in overrides]
        if out is not None:
            settings.append(Override("pipeline.output", out, origin="--out"))
        spec = load_pipeline(pipeline, overrides=settings)
        check_inputs(spec)
    except PipelineError as exc:
        if exc.suggestions:
            exc.args = (f"{exc}; e.g. {' or '.join(f'--set {item}' for item in exc.suggestions)}",)
        raise
    from softlabels.pipelines.report import format_table
    from softlabels.pipelines.runner import run_pipeline

    report = run_pipeline(spec, overwrite=overwrite, command=invocation())
    click.echo(format_table(report))
