"""Dataset and model plug-ins given as ``module:callable`` or ``file.py:callable``."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from softlabels.errors import PluginError
from softlabels.sources import load_callable, load_dataset, load_model

PLUGIN_SOURCE = textwrap.dedent(
    '''
    import torch
    from torch import nn
    from torch.utils.data import Dataset, IterableDataset


    class Ramp(Dataset):
        """Sample i is a [1, 4, 4] tensor filled with i; label i % 3."""

        def __init__(self, size, classes=None, fingerprint=None):
            self.size = size
            if classes is not None:
                self.classes = classes
            if fingerprint is not None:
                self.fingerprint = fingerprint

        def __len__(self):
            return self.size

        def __getitem__(self, index):
            if index >= self.size:
                raise IndexError(index)
            return torch.full((1, 4, 4), float(index)), index % 3


    def ramp(split):
        return Ramp(6 if split == "train" else 4)


    def named_ramp(split):
        return Ramp(5, classes=["low", "mid", "high", "unused"])


    def fingerprinted_ramp(split):
        return Ramp(5, classes=["a", "b", "c"], fingerprint=lambda: "v1")


    def raising(split):
        raise RuntimeError("no data today")


    def number(split):
        return 42


    class Stream(IterableDataset):
        def __iter__(self):
            yield torch.zeros(1, 2, 2), 0


    def stream(split):
        return Stream()


    def pairs_of_strings(split):
        return [("a", "b")]


    def float_labels(split):
        return [(torch.zeros(1, 2, 2), 0.5)]


    def bool_tensors(split):
        return [(torch.zeros(4, dtype=torch.bool), 1)]


    class Tiny(nn.Module):
        def __init__(self, num_classes, in_channels):
            super().__init__()
            self.linear = nn.Linear(in_channels * 16, num_classes)

        def forward(self, x):
            return self.linear(x.flatten(1))


    def tiny(num_classes, in_channels):
        return Tiny(num_classes, in_channels)


    def not_a_model(num_classes, in_channels):
        return "model"

    NOT_CALLABLE = 3
    '''
)


@pytest.fixture
def plugin_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_plugins.py"
    path.write_text(PLUGIN_SOURCE)
    return path


@pytest.fixture
def plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Name of an importable module holding the plug-ins (removed from sys.modules afterwards)."""
    name = "softlabels_test_plugins_module"
    (tmp_path / f"{name}.py").write_text(PLUGIN_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_module_plugin_dataset(plugin_module: str) -> None:
    source = load_dataset(f"{plugin_module}:ramp", "train")
    assert len(source) == 6 and source.input_shape == (1, 4, 4)
    assert source.num_classes == 3 and source.class_names == ("0", "1", "2")
    image, label = source.dataset[4]
    assert image.dtype == torch.float32 and float(image[0, 0, 0]) == 4.0 and label == 1


def test_file_plugin_dataset(plugin_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(plugin_file.parent)
    source = load_dataset("./my_plugins.py:ramp", "test")
    assert len(source) == 4 and source.num_classes == 3
    assert source.fingerprint == load_dataset(f"{plugin_file}:ramp", "test").fingerprint


def test_plugin_fingerprint_follows_content(plugin_file: Path) -> None:
    train = load_dataset(f"{plugin_file}:ramp", "train")
    assert load_dataset(f"{plugin_file}:ramp", "test").fingerprint != train.fingerprint
    assert load_dataset(f"{plugin_file}:ramp", "train").fingerprint == train.fingerprint


def test_plugin_classes_and_own_fingerprint(plugin_file: Path) -> None:
    named = load_dataset(f"{plugin_file}:named_ramp", "train")
    assert named.class_names == ("low", "mid", "high", "unused") and named.num_classes == 4
    fingerprinted = load_dataset(f"{plugin_file}:fingerprinted_ramp", "train")
    assert fingerprinted.num_classes == 3
    assert fingerprinted.fingerprint != load_dataset(f"{plugin_file}:fingerprinted_ramp", "test").fingerprint


def test_file_plugin_dataset_unpickles_in_a_fresh_process(plugin_file: Path) -> None:
    source = load_dataset(f"{plugin_file}:ramp", "train")
    payload = pickle.dumps(source.dataset)
    script = "import pickle, sys; dataset = pickle.loads(sys.stdin.buffer.read()); print(len(dataset), dataset[2][1])"
    result = subprocess.run(
        [sys.executable, "-c", script], input=payload, capture_output=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().split() == ["6", "2"]


@pytest.mark.parametrize(
    ("callable_name", "message"),
    [
        ("raising", "no data today"),
        ("number", "not a map-style Dataset"),
        ("stream", "not a map-style Dataset"),
        ("pairs_of_strings", "sample 0"),
        ("float_labels", "integer"),
        ("bool_tensors", "where a float or integer input tensor belongs"),
        ("missing", "no attribute 'missing'"),
        ("NOT_CALLABLE", "not a callable"),
    ],
)
def test_misbehaving_dataset_plugins(plugin_file: Path, callable_name: str, message: str) -> None:
    with pytest.raises(PluginError, match=message) as raised:
        load_dataset(f"{plugin_file}:{callable_name}", "train")
    assert "\n" not in str(raised.value)


def test_unimportable_plugins(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("def f(:\n")
    with pytest.raises(PluginError, match="SyntaxError"):
        load_callable(f"{broken}:f", what="dataset")
    with pytest.raises(PluginError, match="does not exist"):
        load_callable(f"{tmp_path / 'absent.py'}:f", what="dataset")
    with pytest.raises(PluginError, match="ModuleNotFoundError"):
        load_callable("no_such_module_anywhere:f", what="model")


def test_module_plugin_model(plugin_module: str) -> None:
    model = load_model(f"{plugin_module}:tiny", num_classes=5, in_channels=2)
    assert model.weights_sha256 is None and model.weights_path is None
    assert model.num_parameters == 2 * 16 * 5 + 5
    assert model.module(torch.zeros(3, 2, 4, 4)).shape == (3, 5)


def test_file_plugin_model_with_weights(plugin_file: Path, tmp_path: Path) -> None:
    first = load_model(f"{plugin_file}:tiny", num_classes=3, in_channels=1)
    weights = tmp_path / "tiny.pt"
    torch.save(first.module.state_dict(), weights)
    second = load_model(f"{plugin_file}:tiny", num_classes=3, in_channels=1, weights=str(weights))
    assert second.weights_sha256 is not None and second.weights_path == str(weights)
    for key, tensor in first.module.state_dict().items():
        assert torch.equal(second.module.state_dict()[key], tensor)


def test_model_plugin_returning_no_module(plugin_file: Path) -> None:
    with pytest.raises(PluginError, match="not a torch.nn.Module"):
        load_model(f"{plugin_file}:not_a_model", num_classes=3, in_channels=1)
    with pytest.raises(PluginError, match="failed"):
        load_model(f"{plugin_file}:raising", num_classes=3, in_channels=1)
