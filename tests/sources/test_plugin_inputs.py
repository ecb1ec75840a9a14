"""Plug-in datasets of any input (features, token ids, signals) and model plug-ins given the input."""

from __future__ import annotations

import hashlib
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from softlabels.errors import InvalidArgumentError, PluginError
from softlabels.sources import IGNORE_INDEX, load_dataset, load_model
from softlabels.sources.fingerprints import FingerprintBuilder

PLUGINS = textwrap.dedent(
    '''
    import os

    import torch
    from torch import nn

    TOKEN = int(os.environ.get("PLUGIN_TOKEN", "3"))
    FEATURE = float(os.environ.get("PLUGIN_FEATURE", "0.5"))


    def features(split):
        """Tabular rows: float64 [5] features (cast to float32), int labels."""
        rows = [(torch.arange(5, dtype=torch.float64) * index, index % 3) for index in range(6)]
        rows[2] = (torch.full((5,), FEATURE, dtype=torch.float64), 2)
        return rows


    def tokens(split):
        """int32 token ids [4] (cast to int64) with next-token targets [4], -100 at the end."""
        samples = []
        for index in range(5):
            ids = torch.tensor([index, index + 1, TOKEN, 7], dtype=torch.int32)
            samples.append((ids, torch.tensor([index + 1, TOKEN, 7, -100])))
        return samples


    class Ragged(list):
        pad_id = 9


    def ragged(split):
        """Token sequences of lengths 2, 4 and 3, labelled per position."""
        return Ragged(
            [(torch.arange(length), torch.arange(1, length + 1)) for length in (2, 4, 3)]
        )


    def signals(split):
        """float [T] signals of varying length with one label each."""
        return [(torch.ones(length), length % 2) for length in (3, 5, 4)]


    def tokens_with_one_label(split):
        return [(torch.tensor([1, 2, 3]), 1), (torch.tensor([1, 2, 0]), 0)]


    def images_then_features(split):
        return [(torch.zeros(1, 2, 2), 0), (torch.zeros(4), 1)]


    def images_of_two_sizes(split):
        return [(torch.zeros(1, 2, 2), 0), (torch.zeros(1, 3, 3), 1)]


    def ints_then_floats(split):
        return [(torch.tensor([1, 2]), 0), (torch.tensor([1.0, 2.0]), 1)]


    def short_targets(split):
        return [(torch.tensor([1, 2, 3]), torch.tensor([2, 3]))]


    def float_targets(split):
        return [(torch.tensor([1, 2]), torch.tensor([0.5, 1.0]))]


    def mixed_targets(split):
        return [(torch.tensor([1, 2]), torch.tensor([2, 0])), (torch.tensor([1, 2]), 1)]


    def negative_position_label(split):
        return [(torch.tensor([1, 2]), torch.tensor([2, -5]))]


    def position_labels_on_images(split):
        return [(torch.zeros(2, 2, 2), torch.tensor([0, 1]))]


    def scalar_inputs(split):
        return [(torch.tensor(1.0), 0)]


    def all_ignored(split):
        return [(torch.tensor([1, 2]), torch.tensor([-100, -100]))]


    class Bag(list):
        classes = ["a", "b", "c"]


    def declared_tokens(split):
        return Bag([(torch.tensor([0, 1]), torch.tensor([1, 3]))])


    def bad_pad_id(split):
        dataset = Ragged([(torch.tensor([1]), 0)])
        dataset.pad_id = "zero"
        return dataset


    def old_style_model(num_classes, in_channels):
        return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 4, num_classes))


    def sequence_model(num_classes, input_shape, input_dtype):
        assert input_dtype == torch.int64, input_dtype
        return nn.Sequential(nn.Embedding(num_classes, 8), nn.Linear(8, num_classes))


    def any_model(**arguments):
        model = nn.Linear(1, 1)
        model.arguments = arguments
        return model
    '''
)


@pytest.fixture
def plugins(tmp_path: Path) -> str:
    path = tmp_path / "input_plugins.py"
    path.write_text(PLUGINS)
    return str(path)


def test_feature_vectors(plugins: str) -> None:
    source = load_dataset(f"{plugins}:features")
    assert source.input_shape == (5,) and source.input_dtype == torch.float32
    assert source.positions is None and not source.per_position and not source.is_image
    features, label = source.dataset[3]
    assert features.dtype == torch.float32 and features.tolist() == [0.0, 3.0, 6.0, 9.0, 12.0] and label == 0
    model = load_model(
        "mlp", num_classes=source.num_classes, input_shape=source.input_shape, random_weights=True
    )
    assert model.module(torch.stack([source.dataset[i][0] for i in range(2)])).shape == (2, 3)


def test_token_ids_with_labels_per_position(plugins: str) -> None:
    source = load_dataset(f"{plugins}:tokens")
    assert source.input_shape == (4,) and source.input_dtype == torch.int64
    assert source.positions == 4 and source.per_position and source.num_classes == 8
    tokens, targets = source.dataset[1]
    assert tokens.dtype == torch.int64 and tokens.tolist() == [1, 2, 3, 7]
    assert targets.dtype == torch.int64 and targets.tolist() == [2, 3, 7, IGNORE_INDEX]
    with pytest.raises(InvalidArgumentError, match="not images with channels"):
        _ = source.in_channels


def test_sequences_of_varying_length_come_padded_to_the_longest(plugins: str) -> None:
    source = load_dataset(f"{plugins}:ragged")
    assert source.input_shape == (4,) and source.positions == 4 and source.num_classes == 5
    tokens, targets = source.dataset[0]
    assert tokens.tolist() == [0, 1, 9, 9]  # the dataset's own pad_id
    assert targets.tolist() == [1, 2, IGNORE_INDEX, IGNORE_INDEX]
    assert source.dataset[1][0].tolist() == [0, 1, 2, 3]


def test_float_signals_of_varying_length(plugins: str) -> None:
    source = load_dataset(f"{plugins}:signals")
    assert source.input_shape == (5,) and source.positions is None
    signal, label = source.dataset[0]
    assert signal.tolist() == [1.0, 1.0, 1.0, 0.0, 0.0] and label == 1


def test_token_ids_with_one_label_each(plugins: str) -> None:
    source = load_dataset(f"{plugins}:tokens_with_one_label")
    assert source.input_dtype == torch.int64 and source.positions is None and source.num_classes == 2


def test_declared_classes_bound_labels_per_position(plugins: str) -> None:
    with pytest.raises(PluginError, match=r"sample 0 is label 3 outside \[0, 3\) and not -100"):
        load_dataset(f"{plugins}:declared_tokens")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "images_then_features",
            r"sample 1 is a torch.float32 tensor of shape \[4\] where samples are float32 \[1, 2, 2\]",
        ),
        ("images_of_two_sizes", r"shape \[1, 3, 3\] where samples are float32 \[1, 2, 2\]$"),
        ("ints_then_floats", r"where samples are int64 \[2\] \(only the length may vary\)"),
        ("short_targets", r"target of shape \[2\] for an input of shape \[3\]"),
        ("float_targets", r"target a torch.float32 tensor of shape \[2\] where int64 labels \[L\] belong"),
        ("mixed_targets", "sample 1 is one label where the samples before have labels per position"),
        ("negative_position_label", r"label -5 outside \[0, number of classes\) and not -100 \(ignored\)"),
        ("position_labels_on_images", r"labels per position need a sequence input \[L\]"),
        ("scalar_inputs", "where a float or integer input tensor belongs"),
        ("all_ignored", "every position is ignored"),
        ("bad_pad_id", "pad_id must be an int"),
    ],
)
def test_misbehaving_inputs_and_targets(plugins: str, name: str, message: str) -> None:
    with pytest.raises(PluginError, match=message) as raised:
        load_dataset(f"{plugins}:{name}")
    assert "\n" not in str(raised.value)


def fingerprint(plugins: str, name: str, monkeypatch: pytest.MonkeyPatch, **environment: str) -> str:
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    for module in [name for name in sys.modules if name.startswith("softlabels_plugin_input_plugins")]:
        del sys.modules[module]  # re-import, so that the module reads the environment again
    return load_dataset(f"{plugins}:{name}").fingerprint


def test_fingerprint_follows_a_token(plugins: str, monkeypatch: pytest.MonkeyPatch) -> None:
    before = fingerprint(plugins, "tokens", monkeypatch)
    assert fingerprint(plugins, "tokens", monkeypatch) == before
    assert fingerprint(plugins, "tokens", monkeypatch, PLUGIN_TOKEN="4") != before


def test_fingerprint_follows_a_feature(plugins: str, monkeypatch: pytest.MonkeyPatch) -> None:
    before = fingerprint(plugins, "features", monkeypatch)
    assert fingerprint(plugins, "features", monkeypatch, PLUGIN_FEATURE="0.25") != before


def test_float32_fingerprints_are_unchanged(tmp_path: Path) -> None:
    """Stores made for float plug-ins before other inputs were accepted must still match."""
    plugin = tmp_path / "images.py"
    plugin.write_text(
        "import torch\ndef images(split):\n    return [(torch.full((1, 2, 2), float(i)), i) for i in range(2)]\n"
    )
    content = hashlib.sha256()
    for index in range(2):
        array = np.full((1, 2, 2), float(index), dtype=np.float32)
        content.update(f"{array.shape}".encode())
        content.update(array.data)
    builder = FingerprintBuilder("plugin", "train", 2, ("0", "1"))
    builder.add_labels(np.arange(2))
    builder.add_text(content.hexdigest())
    assert load_dataset(f"{plugin}:images").fingerprint == builder.hexdigest()


def test_old_model_plugins_still_get_num_classes_and_in_channels(plugins: str) -> None:
    model = load_model(f"{plugins}:old_style_model", num_classes=3, input_shape=(1, 2, 2))
    assert model.module(torch.zeros(2, 1, 2, 2)).shape == (2, 3)


def test_model_plugins_get_the_input_shape_and_dtype(plugins: str) -> None:
    model = load_model(f"{plugins}:sequence_model", num_classes=6, input_shape=(4,), input_dtype=torch.int64)
    assert model.module(torch.zeros(2, 4, dtype=torch.int64)).shape == (2, 4, 6)


def test_model_plugins_with_keyword_arguments_get_everything(plugins: str) -> None:
    image_model = load_model(f"{plugins}:any_model", num_classes=3, input_shape=(2, 8, 8)).module
    assert image_model.arguments == {  # type: ignore[operator]
        "num_classes": 3,
        "input_shape": (2, 8, 8),
        "input_dtype": torch.float32,
        "in_channels": 2,
    }
    token_model = load_model(
        f"{plugins}:any_model", num_classes=3, input_shape=(4,), input_dtype=torch.int64
    ).module
    assert token_model.arguments == {"num_classes": 3, "input_shape": (4,), "input_dtype": torch.int64}  # type: ignore[operator]
