"""Pipeline files: the shipped ones parse, and every kind of mistake is one clear error up front."""

from __future__ import annotations

from pathlib import Path

import pytest

from softlabels.errors import PipelineError
from softlabels.pipelines import load_pipeline, parse_override
from softlabels.pipelines.spec import Override, PipelineSpec, parse_pipeline

REPO_ROOT = Path(__file__).resolve().parents[2]
PIPELINES = REPO_ROOT / "pipelines"
EMBEDDED = REPO_ROOT / "softlabels" / "pipelines"

MINIMAL = """
[dataset]
spec = "digits"

[teacher]
model = "cnn"
epochs = 2

[generate]
temperature = 4

[students.kd]
model = "mlp"
epochs = 3

[students.baseline]
model = "mlp"
epochs = 3
kd = false
"""


def parse(text: str, *overrides: str) -> PipelineSpec:
    return parse_pipeline(
        text, source="x.toml", default_name="x", overrides=[parse_override(item) for item in overrides]
    )


def error_of(text: str, *overrides: str) -> str:
    with pytest.raises(PipelineError) as caught:
        parse(text, *overrides)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_top_level_digits_pipeline_is_the_embedded_default_byte_for_byte() -> None:
    assert (PIPELINES / "digits.toml").read_bytes() == (EMBEDDED / "digits.toml").read_bytes()


def test_default_pipeline_compares_a_kd_student_with_a_same_model_baseline() -> None:
    spec = load_pipeline()
    assert spec.name == "digits" and spec.output == "data/digits" and spec.source == "built-in digits.toml"
    assert spec.dataset.source_spec == "digits" and spec.dataset.val_split == "test"
    assert spec.teacher.weights is None and spec.teacher.epochs is not None
    assert spec.generate.store == "data/digits/labels.zarr" and spec.generate.label_format == "full"
    kd, baseline = spec.students
    assert (kd.kd, baseline.kd) == (True, False)
    assert (kd.model, kd.epochs, kd.seed) == (baseline.model, baseline.epochs, baseline.seed)
    assert load_pipeline(PIPELINES / "digits.toml").to_json() | {"source": ""} == spec.to_json() | {
        "source": ""
    }


def test_cifar10_pipeline_takes_its_archive_from_softlabels_datasets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOFTLABELS_DATASETS", "/data/archives")
    monkeypatch.setenv("HOME", "/home/someone")
    spec = load_pipeline(PIPELINES / "cifar10.toml")
    assert spec.dataset.spec == "imagefolder" and spec.dataset.archive == "/data/archives/cifar10-jpeg.tar.gz"
    assert spec.dataset.root == "/home/someone/.cache/softlabels/cifar10"
    assert spec.dataset.source_spec == f"imagefolder:{spec.dataset.root}"
    monkeypatch.delenv("SOFTLABELS_DATASETS")
    # Unset, the variable stays as written; the input check names it when the archive is needed.
    assert (
        load_pipeline(PIPELINES / "cifar10.toml").dataset.archive
        == "$SOFTLABELS_DATASETS/cifar10-jpeg.tar.gz"
    )
    assert {student.kd for student in spec.students} == {True, False}
    root = load_pipeline(PIPELINES / "cifar10.toml", overrides=["dataset.root=/data/cifar"]).dataset.root
    assert root == "/data/cifar"


def test_defaults_fill_in_and_output_follows_the_name() -> None:
    spec = parse(MINIMAL, "pipeline.name=demo")
    assert spec.output == "data/demo" and spec.generate.store == "data/demo/labels.zarr"
    assert spec.generate.dtype == "float16" and spec.run.device == "auto"
    assert [s.seed for s in spec.students] == [0, 0]
    assert parse(MINIMAL, "run.seed=7").teacher.seed == 7


def test_overrides_are_toml_values_when_they_parse_and_strings_otherwise() -> None:
    assert parse_override("students.kd.epochs=3") == Override("students.kd.epochs", 3)
    assert parse_override("students.kd.alpha = 0.5") == Override("students.kd.alpha", 0.5)
    assert parse_override("students.kd.kd=false") == Override("students.kd.kd", False)
    assert parse_override("dataset.root=/data/x y") == Override("dataset.root", "/data/x y")
    assert parse_override('pipeline.name="true"') == Override("pipeline.name", "true")
    assert parse_override("teacher.weights=w=1.pt") == Override("teacher.weights", "w=1.pt")


@pytest.mark.parametrize("text", ["students.kd.epochs", "=3", "students..epochs=3", "students.kd.=1"])
def test_malformed_overrides_are_refused(text: str) -> None:
    with pytest.raises(PipelineError, match="KEY=VALUE"):
        parse_override(text)


def test_an_override_can_add_a_student() -> None:
    spec = parse(MINIMAL, "students.tiny.model=cnn-small", "students.tiny.epochs=1")
    assert [s.name for s in spec.students] == ["kd", "baseline", "tiny"]


def test_wrong_type_names_file_key_expectation_and_value() -> None:
    text = MINIMAL.replace("epochs = 3\nkd = false", 'epochs = "three"\nkd = false')
    assert error_of(text) == 'x.toml: students.baseline.epochs: expected an integer >= 1, got "three"'


def test_a_bad_override_is_named_as_such() -> None:
    assert error_of(MINIMAL, "students.kd.epochs=0") == (
        "x.toml: override students.kd.epochs: expected an integer >= 1, got 0"
    )
    assert (
        error_of(MINIMAL, "teacher.model.x=1")
        == "x.toml: override teacher.model.x: teacher.model is not a table"
    )


def test_unknown_key_lists_the_allowed_ones() -> None:
    message = error_of(MINIMAL, "students.kd.epoch=3")
    assert message.startswith(
        "x.toml: override students.kd.epoch: unknown key; allowed keys in [students.kd]: model, "
    )
    assert "epochs" in message and "alpha" in message
    assert error_of(MINIMAL + "\n[extra]\n").startswith(
        "x.toml: extra: unknown key; allowed keys in a pipeline"
    )


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            MINIMAL.replace('[teacher]\nmodel = "cnn"\n', "[teacher]\n"),
            "x.toml: teacher.model: missing; expected ",
        ),
        (
            MINIMAL.replace("temperature = 4", ""),
            "x.toml: generate.temperature: missing; expected a number > 0",
        ),
        (MINIMAL.replace("epochs = 2", ""), "x.toml: teacher.epochs: missing; expected an integer >= 1"),
        (
            MINIMAL.replace('[dataset]\nspec = "digits"\n', ""),
            "x.toml: dataset: missing; expected a [dataset] table",
        ),
        ("dataset = 3\n" + MINIMAL.replace("[dataset]\n", "[data]\n"), "x.toml: data: unknown key"),
        (MINIMAL.replace("[dataset]\n", "dataset = 3\n[datasetx]\n"), "x.toml: datasetx: unknown key"),
    ],
)
def test_missing_fields_are_named(text: str, expected: str) -> None:
    assert error_of(text).startswith(expected)


def test_a_table_of_the_wrong_type_is_named() -> None:
    text = MINIMAL.replace('[dataset]\nspec = "digits"\n', 'dataset = "digits"\n')
    assert error_of(text) == 'x.toml: dataset: expected a [dataset] table, got "digits"'


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["students.kd.alpha=1.5"], "students.kd.alpha: expected a number in [0, 1], got 1.5"),
        (["generate.temperature=-1"], "generate.temperature: expected a number > 0, got -1"),
        (["generate.dtype=float64"], 'generate.dtype: expected one of "float16", '),
        (["run.device=tpu"], 'run.device: expected "auto", "cpu", "cuda" or "cuda:N", got "tpu"'),
        (["students.kd.augment=1"], "students.kd.augment: expected true or false, got 1"),
        (["teacher.optimizer=adam"], 'teacher.optimizer: expected one of "sgd", "adamw", got "adam"'),
        (["pipeline.name=my/run"], "pipeline.name: expected a name made of letters"),
        (["students.baseline.alpha=0.5"], "students.baseline.alpha: does not apply to a hard-label baseline"),
        (
            ["students.baseline.kd=true"],
            "students: expected at least one distilled student (kd = true) and one",
        ),
        (["dataset.root=/x"], 'dataset.root: does not apply to dataset "digits"'),
        (["dataset.spec=imagefolder"], 'dataset.root: missing; dataset "imagefolder" needs'),
        (["dataset.spec=torchvision:MNIST"], 'dataset.root: missing; dataset "torchvision:MNIST" needs'),
        (
            ["dataset.val_split=train"],
            'dataset.val_split: expected a held-out split other than train_split "train"',
        ),
        (["generate.format=topk"], 'generate.k: missing; format = "topk" needs it'),
        (["generate.k=3"], 'generate.k: does not apply to format = "full"'),
        (
            ["generate.format=sampled", "generate.samples=8", "generate.dtype=int8"],
            "generate.dtype: does not apply",
        ),
        (
            ["generate.format=topk", "generate.k=3", "students.kd.temperature=2"],
            "students.kd.temperature: expected generate.temperature (4) or nothing",
        ),
    ],
)
def test_invalid_settings_are_refused_with_the_key(overrides: list[str], expected: str) -> None:
    assert expected in error_of(MINIMAL, *overrides)


def test_teacher_weights_make_training_settings_optional() -> None:
    spec = parse(MINIMAL.replace("epochs = 2\n", 'weights = "w.pt"\n', 1))
    assert spec.teacher.weights == "w.pt" and spec.teacher.epochs is None


def test_student_names_must_be_folder_names() -> None:
    text = MINIMAL.replace("[students.kd]", '[students."a b"]')
    assert error_of(text).startswith("x.toml: students.a b: expected a student name made of letters")


def test_not_toml_and_missing_files_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[dataset\n")
    with pytest.raises(PipelineError, match=r"bad\.toml: not valid TOML"):
        load_pipeline(bad)
    with pytest.raises(PipelineError, match=r"nothing\.toml: no such pipeline file"):
        load_pipeline(tmp_path / "nothing.toml")


def test_relative_paths_stay_relative_and_home_is_expanded() -> None:
    spec = parse(MINIMAL, "dataset.spec=imagefolder", "dataset.root=~/images", "generate.store=s.zarr")
    assert spec.dataset.root == str(Path.home() / "images")
    assert spec.generate.store == "s.zarr"


def test_views_and_their_recipe_go_under_generate() -> None:
    spec = parse(MINIMAL, "generate.views=4", "generate.augment=crop=0.5:1,flip")
    assert (spec.generate.views, spec.generate.augment) == (4, "crop=0.5:1,flip")
    assert (parse(MINIMAL).generate.views, parse(MINIMAL).generate.augment) == (None, None)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("generate.augment=flip",), "generate.augment: needs generate.views"),
        (("generate.views=4", "generate.augment=blur"), "generate.augment: augmentation step 'blur'"),
        (("generate.views=0",), "generate.views"),
        (
            ("generate.views=4", "students.kd.augment=true"),
            "students.kd.augment: must be false for a distilled student of a store of views",
        ),
    ],
)
def test_bad_view_settings_are_one_clear_error(overrides: tuple[str, ...], message: str) -> None:
    assert message in error_of(MINIMAL, *overrides)
