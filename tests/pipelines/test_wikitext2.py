"""The language-model pipeline: ``pipelines/wikitext2.toml``, ``dataset.seq_len``, and a perplexity report."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from softlabels.errors import PipelineError
from softlabels.pipelines import load_pipeline, run_pipeline
from softlabels.pipelines.report import format_table
from softlabels.pipelines.spec import parse_pipeline

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"
WORDS = "the cat sat on a mat and dog ran in park big red house".split()


def write_corpus(root: Path) -> Path:
    generator = random.Random(1)
    root.mkdir(parents=True)
    for name, count in (("train", 50), ("test", 15)):
        lines = (" ".join(generator.choices(WORDS, k=generator.randint(3, 9))) for _ in range(count))
        (root / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_wikitext2_pipeline_reads_the_corpus_through_softlabels_datasets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SOFTLABELS_DATASETS", "/data/sets")
    spec = load_pipeline(PIPELINES / "wikitext2.toml")
    assert spec.dataset.source_spec == "text:/data/sets/wikitext-2" and spec.dataset.seq_len == 64
    assert spec.generate.label_format == "sampled" and spec.generate.samples == 16
    kd, baseline = spec.students
    assert (kd.kd, baseline.kd) == (True, False)
    assert (kd.model, kd.epochs, kd.seed, kd.lr) == (
        baseline.model,
        baseline.epochs,
        baseline.seed,
        baseline.lr,
    )


def test_an_unset_datasets_variable_is_named_before_anything_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SOFTLABELS_DATASETS", raising=False)
    spec = load_pipeline(PIPELINES / "wikitext2.toml", output=str(tmp_path / "out"))
    with pytest.raises(
        PipelineError, match=r"dataset.root: no such folder \$SOFTLABELS_DATASETS/wikitext-2 "
    ):
        run_pipeline(spec, progress=False)
    with pytest.raises(PipelineError, match=r"\(SOFTLABELS_DATASETS is not set\)"):
        run_pipeline(spec, progress=False)
    assert not (tmp_path / "out").exists()


def test_the_wikitext2_pipeline_runs_end_to_end_on_a_tiny_corpus(tmp_path: Path) -> None:
    """The shipped file's shape (teacher, sampled store, KD student, baseline), at toy sizes."""
    corpus = write_corpus(tmp_path / "corpus")
    overrides = [
        f"dataset.root={corpus}",
        "dataset.seq_len=8",
        "teacher.model=lm-transformer-small",
        "teacher.epochs=1",
        "students.kd.epochs=1",
        "students.baseline.epochs=1",
        "run.device=cpu",
    ]
    spec = load_pipeline(PIPELINES / "wikitext2.toml", overrides=overrides, output=str(tmp_path / "out"))
    report = run_pipeline(spec, progress=False)
    assert report.language_model and report.teacher.perplexity is not None
    assert report.store.label_format == "sampled" and report.store.num_rows > 0
    students = {student.name: student for student in report.students}
    assert all(
        student.perplexity is not None and len(student.perplexity_curve) == 1 for student in students.values()
    )
    document = json.loads((tmp_path / "out" / "report.json").read_text())
    gain = document["kd_gains"]["kd"]
    expected = 100 * (students["kd"].perplexity / students["baseline"].perplexity - 1)
    assert gain["baseline"] == "baseline" and gain["perplexity_percent"] == pytest.approx(expected, abs=1e-3)
    assert (tmp_path / "out" / "report.png").stat().st_size > 0
    table = format_table(report)
    assert "final ppl." in table and "Distillation: kd perplexity " in table and "lower is better" in table


@pytest.mark.parametrize(
    ("dataset", "expected"),
    [
        ('spec = "text"\nroot = "/c"', "dataset.seq_len: missing; a text dataset is cut into windows"),
        ('spec = "text:/c"', "dataset.seq_len: missing"),
        ('spec = "digits"\nseq_len = 8', 'dataset.seq_len: applies only to text datasets, not "digits"'),
        ('spec = "text"\nseq_len = 8', 'dataset.root: missing; dataset "text" needs the folder of its files'),
        ('spec = "text"\nroot = "/c"\nseq_len = 0', "dataset.seq_len: expected an integer >= 1, got 0"),
    ],
)
def test_text_datasets_need_a_sequence_length_and_others_refuse_one(dataset: str, expected: str) -> None:
    text = f"""
[dataset]
{dataset}
[teacher]
model = "lm-transformer"
epochs = 1
[generate]
temperature = 1
[students.kd]
model = "lm-lstm"
epochs = 1
[students.base]
model = "lm-lstm"
epochs = 1
kd = false
"""
    with pytest.raises(PipelineError, match=expected.replace("(", r"\(")):
        parse_pipeline(text, source="p.toml", default_name="p")
