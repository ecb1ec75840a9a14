"""``generate --views``: V augmented views per sample, their parameters and labels, in every format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from slow_generate import PLUGINS

from softlabels.errors import InvalidArgumentError, InvalidSettingError, StoreMismatchError
from softlabels.format.encoding_spec import EncodingSpec
from softlabels.format.schema import SHARDS_DONE_ARRAY, VIEW_PARAMS_ARRAY
from softlabels.format.views import ViewRecipe
from softlabels.processing.convert import convert_store
from softlabels.processing.generation import GenerateConfig, generate
from softlabels.processing.merge import merge_stores
from softlabels.processing.pate import GNMaxSettings, pate_labels
from softlabels.sources import load_dataset, load_model
from softlabels.sources.augment import apply_view
from softlabels.store import open_store
from softlabels.store.export import export_store
from softlabels.store.verify import verify_store

VIEWS = 3
RECIPE = "crop=0.3:0.9,flip"


def views_config(out: Path, **overrides: object) -> GenerateConfig:
    settings: dict[str, object] = {
        "dataset": "digits",
        "split": "test",
        "teacher": "cnn-small",
        "random_weights": True,
        "temperature": 2.0,
        "out": str(out),
        "chunk_rows": 64,
        "batch_size": 50,
        "progress": False,
        "views": VIEWS,
        "augment": RECIPE,
        "view_seed": 7,
    }
    settings.update(overrides)
    return GenerateConfig(**settings)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def full_views_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("views") / "full.zarr"
    generate(views_config(out, encoding=EncodingSpec.create("full", dtype="float32")))
    return out


def test_each_view_holds_the_teachers_logits_on_that_view_and_its_parameters(full_views_store: Path) -> None:
    store = open_store(full_views_store)
    assert (store.layout.views, store.layout.view_recipe, store.layout.view_seed) == (VIEWS, RECIPE, 7)
    source = load_dataset("digits", "test")
    rows = np.arange(len(source))
    params = store.read_view_params(0, store.num_rows)
    np.testing.assert_array_equal(params, ViewRecipe.parse(RECIPE).draw(7, rows, VIEWS, 8, 8))

    torch.manual_seed(0)  # the fixed seed of a --random-weights teacher
    teacher = load_model(
        "cnn-small", num_classes=10, in_channels=1, input_size=8, random_weights=True
    ).module.eval()
    images = torch.stack(
        [apply_view(source.dataset[row][0], params[row, view]) for row in rows for view in range(VIEWS)]
    )
    with torch.inference_mode():
        expected = (teacher(images) / 2.0).reshape(len(rows), VIEWS, 10).numpy()
    np.testing.assert_allclose(store.read_all().fields["logits"], expected, rtol=1e-5, atol=1e-5)
    assert not np.array_equal(expected[:, 0], expected[:, 1]), "the views must differ"


@pytest.mark.parametrize(
    "encoding",
    [
        EncodingSpec.create("full", dtype="int8"),
        EncodingSpec.create("topk", k=3),
        EncodingSpec.create("sampled", samples=4),
    ],
    ids=["full-int8", "topk", "sampled"],
)
def test_every_format_stores_views_and_verifies(tmp_path: Path, encoding: EncodingSpec) -> None:
    generate(views_config(tmp_path / "s.zarr", encoding=encoding))
    store = open_store(tmp_path / "s.zarr")
    assert all(values.shape[:2] == (store.num_rows, VIEWS) for values in store.read_all().fields.values())
    assert verify_store(tmp_path / "s.zarr").ok


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path: Path, full_views_store: Path) -> None:
    config = views_config(tmp_path / "s.zarr", encoding=EncodingSpec.create("full", dtype="float32"))
    generate(config)
    done = zarr.open_array(str(tmp_path / "s.zarr" / SHARDS_DONE_ARRAY), mode="r+")
    done[1:3] = 0  # two shards lost to an interruption
    view_params = zarr.open_array(str(tmp_path / "s.zarr" / VIEW_PARAMS_ARRAY), mode="r+")
    view_params[64:192] = 0
    generate(config)
    resumed, fresh = open_store(tmp_path / "s.zarr"), open_store(full_views_store)
    np.testing.assert_array_equal(resumed.read_all().fields["logits"], fresh.read_all().fields["logits"])
    np.testing.assert_array_equal(resumed.read_view_params(0, 360), fresh.read_view_params(0, 360))


@pytest.mark.parametrize(
    ("change", "differs"),
    [
        ({"augment": "crop=0.5:1"}, "view recipe"),
        ({"view_seed": 8}, "view seed"),
        ({"views": 2}, "views per sample"),
    ],
)
def test_a_rerun_with_other_views_is_refused(
    tmp_path: Path, full_views_store: Path, change: dict[str, object], differs: str
) -> None:
    config = views_config(full_views_store, encoding=EncodingSpec.create("full", dtype="float32"), **change)
    with pytest.raises(StoreMismatchError, match=differs):
        generate(config)


@pytest.mark.parametrize(
    ("settings", "error", "message"),
    [
        ({"views": None, "augment": "flip"}, InvalidArgumentError, "needs a number of views"),
        ({"views": 0}, InvalidArgumentError, "views must be an integer"),
        ({"augment": "blur"}, InvalidSettingError, "'blur' is not one of"),
        ({"dataset": "text:x", "seq_len": 4}, InvalidArgumentError, "text dataset"),
        ({"scheduler": "local:2"}, InvalidArgumentError, "not on a cluster"),
    ],
)
def test_bad_view_settings_are_refused_before_any_work(
    tmp_path: Path, settings: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        views_config(tmp_path / "s.zarr", **settings)


def test_views_of_non_image_data_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match=r"views augment images \[C, H, W\]"):
        generate(views_config(tmp_path / "s.zarr", dataset=f"{PLUGINS}:token_windows"))


def test_convert_keeps_the_views_and_their_parameters(tmp_path: Path, full_views_store: Path) -> None:
    convert_store(full_views_store, tmp_path / "t.zarr", EncodingSpec.create("topk", k=2))
    source, converted = open_store(full_views_store), open_store(tmp_path / "t.zarr")
    assert (converted.layout.views, converted.layout.view_recipe, converted.layout.view_seed) == (
        VIEWS,
        RECIPE,
        7,
    )
    np.testing.assert_array_equal(converted.read_view_params(0, 360), source.read_view_params(0, 360))
    kept = converted.read_all().fields["indices"]
    np.testing.assert_array_equal(kept[:, :, 0], source.read_all().fields["logits"].argmax(axis=-1))


def test_export_keeps_the_views_and_their_parameters(tmp_path: Path, full_views_store: Path) -> None:
    export_store(full_views_store, tmp_path / "views.npz")
    store = open_store(full_views_store)
    with np.load(tmp_path / "views.npz") as exported:
        np.testing.assert_array_equal(exported[VIEW_PARAMS_ARRAY], store.read_view_params(0, 360))
        np.testing.assert_array_equal(exported["logits"], store.read_all().fields["logits"])


def test_verify_names_a_crop_box_no_image_can_have(tmp_path: Path, full_views_store: Path) -> None:
    generate(views_config(tmp_path / "s.zarr", encoding=EncodingSpec.create("full", dtype="float32")))
    params = zarr.open_array(str(tmp_path / "s.zarr" / VIEW_PARAMS_ARRAY), mode="r+")
    params[5, 1, 2] = 0  # an empty crop
    params[70, 0, 0] = np.nan
    report = verify_store(tmp_path / "s.zarr")
    assert not report.ok
    described = report.describe()
    assert "1 rows (1 label cells) hold a crop box that is not whole pixels" in described
    assert "first: row 5, cell 1" in described
    assert "view parameters that are NaN or Inf (first: row 70, cell 0)" in described


def test_merge_and_pate_refuse_stores_of_views(tmp_path: Path, full_views_store: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="holds 3 augmented views per sample; merge"):
        merge_stores([full_views_store, full_views_store], tmp_path / "m.zarr")
    with pytest.raises(InvalidArgumentError, match="holds 3 augmented views per sample; PATE"):
        pate_labels(
            [str(full_views_store), str(full_views_store)],
            str(tmp_path / "p.zarr"),
            GNMaxSettings(1.0, 10, 1e-5),
        )
