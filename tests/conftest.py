"""Shared fixtures, among them the real datasets some tests need.

Those datasets are read from the folder named by ``SOFTLABELS_DATASETS`` (the same variable the
shipped pipelines read), by default ``../shared/datasets`` beside the checkout. It holds
``cifar10-jpeg.tar.gz``, ``mnist/t10k-{images-idx3,labels-idx1}-ubyte.gz`` and
``wikitext-2/{valid,test}.txt``. Tests that need a
missing file are skipped, not failed, and the skip reason names the file and the variable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from student_helpers import write_store

from softlabels.pipelines.data import DATASETS_ENV

if TYPE_CHECKING:
    from softlabels.sources import DatasetSource

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = Path(os.environ.get(DATASETS_ENV) or REPO_ROOT.parent / "shared" / "datasets")
MNIST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def softlabels_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/softlabels`` (default ``~/.cache/softlabels``), for unpacked datasets."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "softlabels"


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """``$SOFTLABELS_DATASETS``, else ``../shared/datasets`` (which may be missing; see the fixtures below)."""
    return SHARED_DATASETS


@pytest.fixture(scope="session")
def cifar10_root() -> Path:
    """CIFAR-10 as an image folder (``train/``, ``test/``), unpacked once into the cache."""
    archive = SHARED_DATASETS / "cifar10-jpeg.tar.gz"
    if not archive.is_file():
        pytest.skip(f"{archive} is absent (set {DATASETS_ENV} to a folder holding cifar10-jpeg.tar.gz)")
    # Imported here so that test folders that never use datasets do not pay for torch.
    from softlabels.sources import ensure_cifar10

    return ensure_cifar10(archive, softlabels_cache_dir() / "cifar10")


@pytest.fixture(scope="session")
def wikitext2_root() -> Path:
    """The WikiText-2 folder (``valid.txt``, ``test.txt``), usable as ``text:<folder>``."""
    folder = SHARED_DATASETS / "wikitext-2"
    if not (folder / "valid.txt").is_file():
        pytest.skip(f"{folder / 'valid.txt'} is absent (set {DATASETS_ENV} to a folder holding wikitext-2/)")
    return folder


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root for ``torchvision:MNIST`` holding the 10,000-image test split.

    The shared files sit directly in ``mnist/``; torchvision's layout is ``<root>/MNIST/raw/``,
    so the root is a temporary folder of symlinks.
    """
    source = SHARED_DATASETS / "mnist"
    if not all((source / name).is_file() for name in MNIST_FILES):
        pytest.skip(f"MNIST files are absent from {source} (set {DATASETS_ENV} to a folder holding mnist/)")
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


class FreshRun:
    """What ``softlabels ARGS`` did in a new interpreter: exit code, stderr, and whether torch got imported."""

    def __init__(self, exit_code: int, stderr: str, imported_torch: bool) -> None:
        self.exit_code, self.stderr, self.imported_torch = exit_code, stderr, imported_torch


@pytest.fixture
def fresh_cli() -> object:
    """Run the console entry point in a new interpreter and report whether it imported torch.

    A bad argument must be refused before torch is imported (which costs seconds): the error
    then comes back at once.
    """
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from softlabels.cli import main\n"
        "try:\n    main()\n    code = 0\n"
        "except SystemExit as exc:\n    code = exc.code if isinstance(exc.code, int) else 1\n"
        "print('torch' in sys.modules, code)\n"
    )

    def run(*args: str, env: dict[str, str] | None = None) -> FreshRun:
        result = subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=False
        )
        imported, exit_code = result.stdout.split()[-2:]
        return FreshRun(int(exit_code), result.stderr, imported == "True")

    return run


@pytest.fixture(scope="session")
def digits_train() -> DatasetSource:
    from softlabels.sources import load_dataset

    return load_dataset("digits", "train")


@pytest.fixture(scope="session")
def digits_store(tmp_path_factory: pytest.TempPathFactory, digits_train: DatasetSource) -> Path:
    """A complete, row-coded float32 store of digits [train] in chunks of 64 rows (23 chunks)."""
    return write_store(tmp_path_factory.mktemp("stores") / "digits.zarr", digits_train)
