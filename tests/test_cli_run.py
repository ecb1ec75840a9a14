"""``softlabels run`` end to end on the default digits pipeline (fewer epochs), re-runs and errors."""

from __future__ import annotations

import hashlib
import json
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
from softlabels.store import open_store

# Enough for sane numbers, little enough for CI: the teacher is well above chance after 3 epochs.
SHORT = ("--set", "teacher.epochs=3", "--set", "students.kd.epochs=2", "--set", "students.baseline.epochs=2")
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
    return output, run(*SHORT, "--out", str(output))


def test_run_trains_generates_and_reports_sane_numbers(first_run: tuple[Path, str]) -> None:
    output, table = first_run
    report = report_of(output)
    teacher, store, students = report["teacher"], report["store"], report["students"]
    accuracies = [teacher["accuracy"]] + [s[key] for s in students for key in ("accuracy", "best_accuracy")]
    assert all(0.0 <= value <= 1.0 for value in accuracies), accuracies
    assert teacher["accuracy"] > 0.1, "the teacher must beat chance (10 classes)"
    assert teacher["stage"]["status"] == "trained" and len(teacher["curve"]) == 3
    assert (
        store["stage"]["status"] == "generated" and store["bytes_on_disk"] > 0 and store["num_rows"] == 1437
    )
    assert [(s["name"], s["kd"], s["stage"]["status"]) for s in students] == [
        ("kd", True, "trained"),
        ("baseline", False, "trained"),
    ]
    assert all(len(s["curve"]) == 2 for s in students)
    assert (output / "report.png").read_bytes().startswith(PNG_MAGIC)
    # The report repeats what the stages recorded, not numbers of its own.
    for student in students:
        summary = json.loads((output / "students" / student["name"] / "summary.json").read_text())
        assert student["accuracy"] == summary["final_val_accuracy"]
    assert open_store(store["path"]).temperature == 4.0
    assert f"{teacher['accuracy']:.2%}" in table and "store" in table and str(output / "report.json") in table


def test_second_run_reuses_every_stage(first_run: tuple[Path, str]) -> None:
    output, _ = first_run
    first = report_of(output)
    weights = sha256(output / "teacher" / "final.pt")
    run(*SHORT, "--out", str(output))
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
    error = fails(monkeypatch, capsys, *SHORT, "--set", "generate.temperature=2", "--out", str(output))
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


def test_run_help_does_not_import_torch(fresh_help: Any) -> None:
    help_text, heavy = fresh_help("run")
    assert heavy == set()
    assert "--set KEY=VALUE" in help_text and "--out" in help_text and "--overwrite" in help_text
