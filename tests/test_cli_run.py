"""``softlabels run`` end to end on the default digits pipeline (fewer epochs), re-runs and errors."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from softlabels.cli import (
    cli,
    main,
    pipeline_commands,  # noqa: F401  (attaches the command)
)
from softlabels.errors import Interrupted
from softlabels.pipelines.data import DATASETS_ENV
from softlabels.store import open_store

# The default pipeline as it ships (about 10 s on 2 idle cores): the README quotes this very run.
DEFAULT: tuple[str, ...] = ()
README = Path(__file__).parents[1] / "README.md"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(*args: str) -> str:
    result = CliRunner().invoke(cli, ["run", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def fails(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """The one-line error ``softlabels run ARGS`` exits with (code 1), after the stage lines (if any)."""
    monkeypatch.setattr(sys, "argv", ["softlabels", "run", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    *progress, error = capsys.readouterr().err.strip().splitlines()
    assert error.startswith("error: "), error
    assert all(line.startswith(("pipeline ", "stage ")) for line in progress), progress
    return error


def report_of(output: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((output / "report.json").read_text())
    return document


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    output = tmp_path_factory.mktemp("run") / "digits"
    return output, run(*DEFAULT, "--out", str(output))


def test_run_trains_generates_and_reports_sane_numbers(first_run: tuple[Path, str]) -> None:
    output, table = first_run
    report = report_of(output)
    teacher, store, students = report["teacher"], report["store"], report["students"]
    accuracies = [teacher["accuracy"]] + [s[key] for s in students for key in ("accuracy", "best_accuracy")]
    assert all(0.0 <= value <= 1.0 for value in accuracies), accuracies
    assert teacher["accuracy"] > 0.1, "the teacher must beat chance (10 classes)"
    assert teacher["stage"]["status"] == "trained" and len(teacher["curve"]) == 6
    assert (
        store["stage"]["status"] == "generated" and store["bytes_on_disk"] > 0 and store["num_rows"] == 1437
    )
    assert [(s["name"], s["kd"], s["stage"]["status"]) for s in students] == [
        ("kd", True, "trained"),
        ("baseline", False, "trained"),
    ]
    assert all(len(s["curve"]) == 10 for s in students)
    assert (output / "report.png").read_bytes().startswith(PNG_MAGIC)
    # The report repeats what the stages recorded, not numbers of its own.
    for student in students:
        summary = json.loads((output / "students" / student["name"] / "summary.json").read_text())
        assert student["accuracy"] == summary["final_val_accuracy"]
    assert open_store(store["path"]).temperature == 4.0
    assert f"{teacher['accuracy']:.2%}" in table and "store" in table and str(output / "report.json") in table


def test_the_readme_quotes_the_output_of_this_run(first_run: tuple[Path, str]) -> None:
    # CPU runs are deterministic: the accuracies and the gain the README shows must be this run's.
    _, table = first_run
    quoted = next(block for block in README.read_text().split("```") if "\nPipeline digits " in block)

    def line(text: str, start: str) -> str:
        return next(row for row in text.splitlines() if row.startswith(start))

    for row in ("teacher ", "student kd ", "student baseline "):
        assert re.findall(r"\d+\.\d+%", line(quoted, row)) == re.findall(r"\d+\.\d+%", line(table, row)), row
    assert line(quoted, "Distillation: ") == line(table, "Distillation: ")


def test_second_run_reuses_every_stage(first_run: tuple[Path, str]) -> None:
    output, _ = first_run
    first = report_of(output)
    weights = sha256(output / "teacher" / "final.pt")
    run(*DEFAULT, "--out", str(output))
    second = report_of(output)
    stages = [second["teacher"]["stage"], second["store"]["stage"], *(s["stage"] for s in second["students"])]
    assert {stage["status"] for stage in stages} == {"reused"}
    assert sum(stage["seconds"] for stage in stages) < first["seconds"]
    assert sha256(output / "teacher" / "final.pt") == weights
    assert [s["accuracy"] for s in second["students"]] == [s["accuracy"] for s in first["students"]]


def test_a_store_made_with_other_settings_is_an_error_not_overwritten(
    first_run: tuple[Path, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    output, _ = first_run
    error = fails(monkeypatch, capsys, *DEFAULT, "--set", "generate.temperature=2", "--out", str(output))
    assert "stage generate:" in error and "temperature" in error and "generate.store" in error
    assert open_store(output / "labels.zarr").temperature == 4.0


def test_given_teacher_weights_are_evaluated_and_overwrite_starts_over(
    first_run: tuple[Path, str], tmp_path: Path
) -> None:
    trained, _ = first_run
    output = tmp_path / "given"
    given = (
        "--set",
        f"teacher.weights={trained / 'teacher' / 'final.pt'}",
        "--set",
        "students.kd.epochs=1",
        "--set",
        "students.baseline.epochs=1",
        "--out",
        str(output),
    )
    run(*given)
    report = report_of(output)
    assert report["teacher"]["stage"]["status"] == "evaluated" and report["teacher"]["curve"] == []
    assert report["teacher"]["accuracy"] == pytest.approx(
        report_of(trained)["teacher"]["accuracy"], abs=1 / 360
    )
    assert not (output / "teacher" / "final.pt").exists()
    run(*given, "--set", "generate.temperature=2", "--overwrite")
    report = report_of(output)
    assert report["teacher"]["stage"]["status"] == "evaluated"
    assert report["store"]["stage"]["status"] == "generated" and report["store"]["temperature"] == 2.0
    assert {s["stage"]["status"] for s in report["students"]} == {"trained"}


def test_ctrl_c_in_a_stage_names_it_and_the_finished_stages(
    first_run: tuple[Path, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    output, _ = first_run
    kd_run = output / "students" / "kd"

    def interrupted(config: Any) -> None:
        raise Interrupted("interrupted: ...", kept=f"1 of 2 epochs in {kd_run}")

    monkeypatch.setattr("softlabels.pipelines.runner.train_student", interrupted)
    monkeypatch.setattr(sys, "argv", ["softlabels", "run", *DEFAULT, "--out", str(output)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"interrupted in stage students.kd (kept 1 of 2 epochs in {kd_run}); finished stages: teacher, "
        "generate; re-run the same command to continue"
    )


def test_an_invalid_file_fails_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline = tmp_path / "bad.toml"
    text = (Path(__file__).parents[1] / "pipelines" / "digits.toml").read_text()
    pipeline.write_text(text.replace("epochs = 10\nalpha", 'epochs = "three"\nalpha'))
    monkeypatch.chdir(tmp_path)
    error = fails(monkeypatch, capsys, str(pipeline))
    assert error == f'error: {pipeline}: students.kd.epochs: expected an integer >= 1, got "three"'
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--set", "students.kd.epocs=3"],
            "built-in digits.toml: --set students.kd.epocs: unknown key; allowed keys in [students.kd]: ",
        ),
        (
            ["--set", "generate.temperature=0"],
            "built-in digits.toml: --set generate.temperature: expected a number > 0, got 0",
        ),
        (
            ["--set", "run.device=gpu"],
            'built-in digits.toml: --set run.device: expected "auto", "cpu", "cuda"',
        ),
        (["missing.toml"], "missing.toml: no such pipeline file"),
    ],
)
def test_a_bad_pipeline_is_refused_before_torch_is_imported(
    fresh_cli: Any, tmp_path: Path, args: list[str], message: str
) -> None:
    result = fresh_cli("run", *args, "--out", str(tmp_path / "out"))
    assert result.exit_code == 1 and result.stderr.startswith(f"error: {message}"), result.stderr
    assert not result.imported_torch and not (tmp_path / "out").exists()


def test_missing_cifar10_data_says_which_setting_provides_it(fresh_cli: Any, tmp_path: Path) -> None:
    # A user without the data: an empty home (so no unpacked copy) and no SOFTLABELS_DATASETS.
    env = {key: value for key, value in os.environ.items() if key != DATASETS_ENV}
    env |= {"HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    pipeline = Path(__file__).parents[1] / "pipelines" / "cifar10.toml"
    result = fresh_cli("run", str(pipeline), "--out", str(tmp_path / "out"), env=env)
    assert result.exit_code == 1 and not result.imported_torch
    error = result.stderr.strip()
    assert error.startswith(f"error: {pipeline}: dataset: no images in {tmp_path}/.cache/softlabels/cifar10 ")
    assert "SOFTLABELS_DATASETS is not set" in error
    assert error.endswith(
        "e.g. --set dataset.root=/path/to/cifar10 or --set dataset.archive=/path/to/cifar10-jpeg.tar.gz"
    )
    with_archive = fresh_cli(
        "run", str(pipeline), "--out", str(tmp_path / "out"), env={**env, DATASETS_ENV: str(tmp_path)}
    )
    assert f"dataset.archive: no such file {tmp_path}/cifar10-jpeg.tar.gz;" in with_archive.stderr


def test_run_help_does_not_import_torch(fresh_help: Any) -> None:
    help_text, heavy = fresh_help("run")
    assert heavy == set()
    assert "--set KEY=VALUE" in help_text and "--out" in help_text and "--overwrite" in help_text
