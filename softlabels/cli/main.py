"""The ``softlabels`` command group and its error handling.

Commands live in sibling modules, one per stage, each parsing options and calling one library
function. Heavy libraries (torch, zarr) are imported inside the commands so that ``--help`` is
instant.
"""

from __future__ import annotations

import sys

import click

from softlabels import __version__
from softlabels.errors import Interrupted, InvalidSettingError, SoftLabelsError


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
    except click.exceptions.Abort as exc:
        # click turns Ctrl-C into Abort; a job that was interrupted says what it kept.
        cause = exc.__cause__
        if isinstance(cause, Interrupted):
            click.echo(one_line(cause), err=True)
        else:
            click.echo("interrupted; re-run the same command to resume where it stopped", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except SoftLabelsError as exc:
        click.echo(f"error: {with_option_hint(one_line(exc), exc, sys.argv[1:2])}", err=True)
        sys.exit(1)


# Settings that library messages name in words other than the option's own name.
_SETTING_WORDS = {
    "batch size": "batch_size",
    "number of workers": "num_workers",
    "learning rate": "lr",
    "weight decay": "weight_decay",
    "buffer chunks": "buffer_chunks",
    "memory budget": "memory_budget_mb",
    "sequence length": "seq_len",
    "value dtype": "dtype",
    "chunk rows": "chunk_rows",
    "chunks per shard": "chunks_per_shard",
    "the validation split": "val_split",
    "unknown optimizer": "optimizer",
    "format": "label_format",
    "the view seed": "view_seed",
}


def with_option_hint(message: str, error: BaseException, command_name: list[str]) -> str:
    """Start a library message with the command-line option it is about: ``--lr: learning rate must ...``.

    Library messages name settings in plain words (``learning rate must be ...``) or, for
    :class:`InvalidSettingError`, in ``error.setting``; the option is found among the options
    of the command that ran. A message about no option of that command is returned unchanged.
    """
    command = cli.commands.get(command_name[0]) if command_name else None
    if command is None:
        return message
    options = {
        param.name: param.opts[0]
        for param in command.params
        if isinstance(param, click.Option) and param.name is not None
    }
    if "to" in options:  # convert names its format --to
        options["label_format"] = options["to"]
    # Plain words -> parameter name: "batch size" -> batch_size, plus the words that differ.
    phrases = {**{name.replace("_", " "): name for name in options}, **_SETTING_WORDS}
    setting = error.setting if isinstance(error, InvalidSettingError) else _leading_phrase(message, phrases)
    option = options.get(phrases.get(setting, setting)) if setting else None
    for name, flag in options.items():  # "a label store (labels) ..." -> "a label store (--labels) ..."
        message = message.replace(f"({name})", f"({flag})")
    return f"{option}: {message}" if option else message


def _leading_phrase(message: str, phrases: dict[str, str]) -> str | None:
    """The longest of ``phrases`` that starts ``message`` as whole words."""
    for phrase in sorted(phrases, key=len, reverse=True):
        if message.startswith(f"{phrase} "):
            return phrase
    return None
