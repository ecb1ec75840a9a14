"""The ``softlabels`` command group and its error handling.

Commands live in sibling modules, one per stage, each parsing options and calling one library
function. Heavy libraries (torch, zarr) are imported inside the commands so that ``--help`` is
instant.
"""

from __future__ import annotations

import sys

import click

from softlabels import __version__
from softlabels.errors import SoftLabelsError


def one_line(error: BaseException) -> str:
    """A single line for users; errors re-raised from DataLoader workers carry a traceback we drop."""
    text = str(error).strip()
    if "Traceback (most recent call last)" in text:
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return " ".join(text.split())


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="softlabels")
def cli() -> None:
    """Offline knowledge distillation: generate teacher soft labels once, train many students from them."""


def main() -> None:
    """Console entry point: known errors become one line on stderr and a non-zero exit."""
    from softlabels.cli import commands  # noqa: F401  (attaches the commands to ``cli``)

    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted; run the same command again to resume where it stopped.", err=True)
        sys.exit(130)
    except SoftLabelsError as exc:
        click.echo(f"error: {one_line(exc)}", err=True)
        sys.exit(1)
