"""Shared fixtures: the real datasets kept beside the checkout in ``../shared/datasets``.

Tests that need one of them are skipped, not failed, when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from student_helpers import write_store

if TYPE_CHECKING:
    from softlabels.sources import DatasetSource

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO_ROOT.parent / "shared" / "datasets"
MNIST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def softlabels_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/softlabels`` (default ``~/.cache/softlabels``), for unpacked datasets."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "softlabels"


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The ``../shared/datasets`` folder (which may be missing; see the fixtures below)."""
    return SHARED_DATASETS


@pytest.fixture(scope="session")
def cifar10_root() -> Path:
    """CIFAR-10 as an image folder (``train/``, ``test/``), unpacked once into the cache."""
    archive = SHARED_DATASETS / "cifar10-jpeg.tar.gz"
    if not archive.is_file():
        pytest.skip(f"{archive} is absent")
    # Imported here so that test folders that never use datasets do not pay for torch.
    from softlabels.sources import ensure_cifar10

    return ensure_cifar10(archive, softlabels_cache_dir() / "cifar10")


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root for ``torchvision:MNIST`` holding the 10,000-image test split.

    The shared files sit directly in ``mnist/``; torchvision's layout is ``<root>/MNIST/raw/``,
    so the root is a temporary folder of symlinks.
    """
    source = SHARED_DATASETS / "mnist"
    if not all((source / name).is_file() for name in MNIST_FILES):
        pytest.skip(f"MNIST files are absent from {source}")
    root = tmp_path_factory.mktemp("mnist-root")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_FILES:
        (raw / name).symlink_to(source / name)
    return root


class CommandResult:
    """Exit code and captured streams of one in-process ``softlabels`` invocation."""

    def __init__(self, exit_code: int, stdout: str, stderr: str) -> None:
        self.exit_code, self.stdout, self.stderr = exit_code, stdout, stderr


@pytest.fixture
def softlabels_main(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> object:
    """Run the console entry point (``softlabels.cli.main``) in-process, as a user's shell would."""
    from softlabels.cli import main

    def invoke(*args: str) -> CommandResult:
        monkeypatch.setattr("sys.argv", ["softlabels", *args])
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return CommandResult(code, captured.out, captured.err)

    return invoke


@pytest.fixture
def fresh_help() -> object:
    """``softlabels <command> --help`` in a new interpreter: its text and whether torch or zarr got imported."""
    import subprocess
    import sys

    def show(command: str) -> tuple[str, set[str]]:
        code = (
            "import sys; from click.testing import CliRunner; from softlabels.cli import cli; "
            f"import softlabels.cli.commands; r = CliRunner().invoke(cli, [{command!r}, '--help']); "
            "assert r.exit_code == 0, r.output; "
            "print(','.join(m for m in ('torch', 'zarr') if m in sys.modules)); print(r.output)"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        heavy, text = result.stdout.split("\n", 1)
        return text, set(filter(None, heavy.split(",")))

    return show


@pytest.fixture(scope="session")
def digits_train() -> DatasetSource:
    from softlabels.sources import load_dataset

    return load_dataset("digits", "train")


@pytest.fixture(scope="session")
def digits_store(tmp_path_factory: pytest.TempPathFactory, digits_train: DatasetSource) -> Path:
    """A complete, row-coded float32 store of digits [train] in chunks of 64 rows (23 chunks)."""
    return write_store(tmp_path_factory.mktemp("stores") / "digits.zarr", digits_train)
