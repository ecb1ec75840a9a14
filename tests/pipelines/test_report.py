"""The results table, ``report.json`` and ``report.png`` of a made-up run."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from softlabels.pipelines.report import (
    PipelineReport,
    StageResult,
    StoreResult,
    StudentResult,
    TeacherResult,
    format_table,
    write_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def student(
    name: str, model: str, kd: bool, accuracy: float, curve: tuple[float, ...] | None = None
) -> StudentResult:
    curve = (0.5, 0.7, accuracy) if curve is None else curve
    return StudentResult(
        name=name,
        model=model,
        kd=kd,
        alpha=0.9 if kd else None,
        temperature=4.0 if kd else None,
        epochs=len(curve),
        accuracy=accuracy,
        best_accuracy=max(curve),
        curve=curve,
        out=f"out/students/{name}",
        weights=f"out/students/{name}/final.pt",
        stage=StageResult("trained", 1.25),
    )


def make_report(output: Path) -> PipelineReport:
    return PipelineReport(
        name="demo",
        source="demo.toml",
        output=str(output),
        dataset="digits",
        val_split="test",
        device="cpu",
        data=None,
        teacher=TeacherResult("cnn", "out/teacher/final.pt", 0.99, (0.9, 0.99), StageResult("trained", 10.0)),
        store=StoreResult(
            "out/labels.zarr", "full", "float16", 4.0, 1437, 10, 31_300, StageResult("reused", 0.1)
        ),
        students=(
            student("small", "cnn-small", False, 0.95),
            student("kd", "mlp", True, 0.9444),
            student("base", "mlp", False, 0.9194),
        ),
        seconds=12.5,
        created="2026-01-01T00:00:00+00:00",
        spec={"name": "demo"},
    )


def test_a_distilled_student_is_compared_with_the_baseline_of_its_model(tmp_path: Path) -> None:
    report = make_report(tmp_path)
    assert report.gains() == {"kd": {"baseline": "base", "points": 2.5}}


def test_table_shows_every_accuracy_the_store_size_and_stage_times(tmp_path: Path) -> None:
    table = format_table(make_report(tmp_path))
    lines = table.splitlines()
    teacher = next(line for line in lines if line.startswith("teacher"))
    assert "cnn" in teacher and "99.00%" in teacher and "10.0 s" in teacher and "trained, 2 epochs" in teacher
    store = next(line for line in lines if line.startswith("store"))
    assert "31.3 kB" in store and "reused" in store and "1437 rows" in store
    kd = next(line for line in lines if line.startswith("student kd"))
    assert "94.44%" in kd and "KD, alpha 0.9, T 4" in kd
    assert any(
        line.startswith("student base ") and "91.94%" in line and "hard labels" in line for line in lines
    )
    assert any(line.startswith("total") and "12.5 s" in line for line in lines)
    assert "Distillation: kd 94.44% vs base 91.94% on hard labels: +2.50 points" in table
    assert f"{tmp_path / 'report.json'}" in table


def test_report_files_are_written_whole(tmp_path: Path) -> None:
    report = make_report(tmp_path)
    json_path, png_path = write_report(report)
    document = json.loads(json_path.read_text())
    assert document["format"] == "softlabels.pipeline-report" and document["version"] == 1
    assert document["teacher"]["accuracy"] == 0.99 and document["store"]["bytes_on_disk"] == 31_300
    assert [s["name"] for s in document["students"]] == ["small", "kd", "base"]
    assert document["kd_gains"]["kd"]["baseline"] == "base"
    assert png_path.read_bytes().startswith(PNG_MAGIC) and png_path.stat().st_size > 10_000
    assert sorted(path.name for path in tmp_path.iterdir()) == ["report.json", "report.png"]  # no temporaries


def test_plotting_leaves_no_figure_open(tmp_path: Path) -> None:
    from matplotlib import pyplot

    write_report(make_report(tmp_path))
    assert pyplot.get_fignums() == []


def test_table_shows_final_and_best_accuracy_and_counts_epochs_in_words(tmp_path: Path) -> None:
    report = dataclasses.replace(
        make_report(tmp_path),
        students=(
            student("kd", "mlp", True, 0.90, curve=(0.80, 0.93, 0.90)),
            student("base", "mlp", False, 0.85, curve=(0.85,)),
        ),
    )
    lines = format_table(report).splitlines()
    header = next(line for line in lines if line.startswith("stage"))
    assert header.split()[2:6] == ["final", "acc.", "best", "acc."]
    kd = next(line for line in lines if line.startswith("student kd"))
    assert kd.split()[3:5] == ["90.00%", "93.00%"] and "trained, 3 epochs" in kd
    base = next(line for line in lines if line.startswith("student base"))
    assert "trained, 1 epoch," in base and "1 epochs" not in base


@pytest.mark.parametrize("epochs, students", [(1, 2), (3, 2), (30, 2), (100, 5)])
def test_plots_of_short_and_long_runs_are_written(tmp_path: Path, epochs: int, students: int) -> None:
    # Looked at by eye for these shapes: integer epoch ticks, legend below the panels, bars per student.
    names = ["kd", "base", "kd2", "base2", "kd3"][:students]
    curve = tuple(0.5 + 0.4 * (epoch + 1) / epochs for epoch in range(epochs))
    report = dataclasses.replace(
        make_report(tmp_path),
        students=tuple(student(name, "mlp", name.startswith("kd"), curve[-1], curve=curve) for name in names),
    )
    _, png_path = write_report(report)
    assert png_path.read_bytes().startswith(PNG_MAGIC)
