"""Model specs: built-in networks, torchvision architectures and plug-ins.

:func:`build_model` makes an architecture; :func:`load_model` also applies the weights policy
(trained weights from a file, or explicitly random ones) and returns a :class:`ModelSource`.
Nothing is ever downloaded.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torchvision
from torch import nn

from softlabels.errors import (
    InvalidArgumentError,
    PluginError,
    SoftLabelsError,
    UnknownNameError,
    WeightsError,
)
from softlabels.sources.checkpoints import apply_weights, read_weights
from softlabels.sources.language_models import CausalLSTM, CausalTransformer
from softlabels.sources.plugins import first_line, is_plugin_ref, load_callable

__all__ = [
    "BUILTIN_MODELS",
    "MLP",
    "BuiltinModel",
    "ConvNet",
    "ModelInputs",
    "ModelSource",
    "build_model",
    "count_parameters",
    "load_model",
    "model_inputs",
    "torchvision_model_names",
]

_TORCHVISION_PREFIX = "torchvision:"
# ResNets keep their ImageNet stem (7x7 stride-2 conv + max-pool) only above this input size;
# on small images that stem would throw away most of the resolution.
_SMALL_INPUT_MAX = 64
# Auxiliary heads make these return tuples in training mode; softlabels wants plain logits.
_TORCHVISION_EXTRA_KWARGS: dict[str, dict[str, Any]] = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}


class MLP(nn.Module):
    """Two-layer perceptron on the input average-pooled to ``grid`` x ``grid``.

    Args:
        in_channels: Input channels.
        num_classes: Output classes.
        hidden: Width of the hidden layer.
        grid: Side of the pooled input (pooling makes any input size work).
    """

    def __init__(self, in_channels: int, num_classes: int, hidden: int = 128, grid: int = 8) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_channels * grid * grid, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.classifier(self.pool(x))
        return logits


class ConvNet(nn.Module):
    """VGG-style network: stages of 3x3 conv + BatchNorm + ReLU, 2x2 max-pool between stages,
    global average pooling and one linear layer.

    Works on any input of at least 1x1 (pooling rounds up), and keeps full resolution in the
    first stage, which suits 8x8 to 64x64 images.

    Args:
        in_channels: Input channels.
        num_classes: Output classes.
        widths: Channels of each stage.
        convs_per_stage: Convolutions in each stage.
    """

    def __init__(
        self, in_channels: int, num_classes: int, widths: tuple[int, ...], convs_per_stage: int
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for stage, width in enumerate(widths):
            if stage > 0:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            for _ in range(convs_per_stage):
                layers += [
                    nn.Conv2d(channels, width, kernel_size=3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                ]
                channels = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.classifier(torch.flatten(self.pool(self.features(x)), 1))
        return logits


@dataclass(frozen=True)
class ModelInputs:
    """What a model is built for: its class count and the input of one sample.

    Attributes:
        num_classes: Output classes (the vocabulary size of a language model).
        input_shape: Shape of one sample's input (``[C, H, W]``, ``[D]``, ``[L]``, ...); None when
            only ``in_channels`` is known (an image model built the old way).
        input_dtype: dtype of the input (int64 for token ids, float32 otherwise).
        in_channels: Input channels of images; None for other inputs.
        input_size: Side of the input images; None when unknown or not images.
    """

    num_classes: int
    input_shape: tuple[int, ...] | None
    input_dtype: torch.dtype
    in_channels: int | None
    input_size: int | None

    @property
    def is_image(self) -> bool:
        """Floating ``[C, H, W]`` inputs (or inputs known only by their channels)."""
        return (
            self.in_channels is not None
            and self.input_dtype.is_floating_point
            and (self.input_shape is None or len(self.input_shape) == 3)
        )

    @property
    def is_features(self) -> bool:
        """Floating ``[D]`` inputs."""
        return (
            self.input_dtype.is_floating_point and self.input_shape is not None and len(self.input_shape) == 1
        )

    @property
    def is_tokens(self) -> bool:
        """Integer ``[L]`` inputs (token ids)."""
        return (
            not self.input_dtype.is_floating_point
            and self.input_shape is not None
            and len(self.input_shape) == 1
        )

    def describe(self) -> str:
        """The inputs in words, for error messages."""
        if self.input_shape is None:
            return f"images of {self.in_channels} channels"
        dtype = str(self.input_dtype).removeprefix("torch.")
        return f"{dtype} inputs of shape {list(self.input_shape)}"


@dataclass(frozen=True)
class BuiltinModel:
    """A built-in architecture.

    Attributes:
        description: One line for help texts.
        takes: The inputs it accepts, in words (``images``, ``token ids``, ...).
        accepts: Whether it can be built for given inputs.
        factory: Builds the network for inputs it accepts.
    """

    description: str
    takes: str
    accepts: Callable[[ModelInputs], bool]
    factory: Callable[[ModelInputs], nn.Module]


def _images(inputs: ModelInputs) -> bool:
    return inputs.is_image


def _images_or_features(inputs: ModelInputs) -> bool:
    return inputs.is_image or inputs.is_features


def _tokens(inputs: ModelInputs) -> bool:
    return inputs.is_tokens


def _channels(inputs: ModelInputs) -> int:
    if inputs.in_channels is None:  # only reached through an accepts() that checked it
        raise InvalidArgumentError(f"an image model cannot take {inputs.describe()}")
    return inputs.in_channels


def _mlp(inputs: ModelInputs) -> nn.Module:
    """``mlp``: tiny; one hidden layer of 128 units on feature vectors, or on images pooled to 8x8."""
    if inputs.is_features and inputs.input_shape is not None:
        return nn.Sequential(
            nn.Linear(inputs.input_shape[0], 128), nn.ReLU(inplace=True), nn.Linear(128, inputs.num_classes)
        )
    return MLP(_channels(inputs), inputs.num_classes)


def _cnn_small(inputs: ModelInputs) -> nn.Module:
    """``cnn-small``: three single-conv stages of 16/32/64 channels. A small, quick student."""
    return ConvNet(_channels(inputs), inputs.num_classes, widths=(16, 32, 64), convs_per_stage=1)


def _cnn(inputs: ModelInputs) -> nn.Module:
    """``cnn``: three two-conv stages of 32/64/128 channels. The default medium network."""
    return ConvNet(_channels(inputs), inputs.num_classes, widths=(32, 64, 128), convs_per_stage=2)


def _cnn_wide(inputs: ModelInputs) -> nn.Module:
    """``cnn-wide``: ``cnn`` at twice the width (64/128/256), about 4x its cost. A good teacher."""
    return ConvNet(_channels(inputs), inputs.num_classes, widths=(64, 128, 256), convs_per_stage=2)


def _lm_transformer(inputs: ModelInputs) -> nn.Module:
    """``lm-transformer``: 3 blocks of width 128, 4 heads. The teacher size."""
    return CausalTransformer(inputs.num_classes, d_model=128, num_layers=3, num_heads=4)


def _lm_transformer_small(inputs: ModelInputs) -> nn.Module:
    """``lm-transformer-small``: 1 block of width 64, 2 heads. The student size."""
    return CausalTransformer(inputs.num_classes, d_model=64, num_layers=1, num_heads=2)


def _lm_lstm(inputs: ModelInputs) -> nn.Module:
    """``lm-lstm``: one LSTM layer of width 128."""
    return CausalLSTM(inputs.num_classes, width=128, num_layers=1)


_IMAGES = "images [C, H, W]"
_TOKENS = "token ids [L]"
BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "mlp": BuiltinModel(
        "tiny MLP (hidden 128) on feature vectors, or on images pooled to 8x8",
        f"{_IMAGES} or features [D]",
        _images_or_features,
        _mlp,
    ),
    "cnn-small": BuiltinModel(
        "small CNN, 3 stages x 1 conv, 16/32/64 channels", _IMAGES, _images, _cnn_small
    ),
    "cnn": BuiltinModel("medium CNN, 3 stages x 2 convs, 32/64/128 channels", _IMAGES, _images, _cnn),
    "cnn-wide": BuiltinModel(
        "wide CNN, 3 stages x 2 convs, 64/128/256 channels (teacher)", _IMAGES, _images, _cnn_wide
    ),
    "lm-transformer": BuiltinModel(
        "causal Transformer LM, 3 blocks, width 128 (teacher)", _TOKENS, _tokens, _lm_transformer
    ),
    "lm-transformer-small": BuiltinModel(
        "causal Transformer LM, 1 block, width 64 (student)", _TOKENS, _tokens, _lm_transformer_small
    ),
    "lm-lstm": BuiltinModel("LSTM LM, 1 layer, width 128", _TOKENS, _tokens, _lm_lstm),
}


@dataclass(frozen=True)
class ModelSource:
    """A model ready for use, with where its weights came from.

    Attributes:
        spec: The model spec as given.
        module: The network (in whatever train/eval mode it was built; callers choose).
        num_parameters: Number of parameter elements.
        weights_sha256: sha256 hex of the weights file; None for random or plug-in weights.
        weights_path: The weights file as given; None when no file was used.
    """

    spec: str
    module: nn.Module
    num_parameters: int
    weights_sha256: str | None
    weights_path: str | None


def build_model(
    spec: str,
    *,
    num_classes: int,
    in_channels: int | None = None,
    input_size: int | None = None,
    input_shape: Sequence[int] | None = None,
    input_dtype: torch.dtype | None = None,
) -> nn.Module:
    """Build the architecture that ``spec`` names, with fresh (random) weights.

    Describe the inputs by ``input_shape`` and ``input_dtype`` (as a
    :class:`~softlabels.sources.DatasetSource` has them); image models may instead be given
    ``in_channels`` (and ``input_size``) alone.

    Args:
        spec: A built-in name (see :data:`BUILTIN_MODELS`), a torchvision classification model
            name (``resnet18``, optionally as ``torchvision:resnet18``), or a plug-in
            ``package.module:callable`` / ``path/to/file.py:callable``. A plug-in is called with
            those of ``num_classes``, ``input_shape`` (tuple), ``input_dtype`` (torch dtype) and,
            for image inputs, ``in_channels`` that its signature names (all of them when it takes
            ``**kwargs``).
        num_classes: Output classes (the vocabulary size for token inputs).
        in_channels: Input channels of images (torchvision models get their first convolution
            replaced); taken from a 3-D ``input_shape`` when not given.
        input_size: Side of the input images; at most 64 gives ResNets a small-image stem
            (3x3 stride-1 conv1, no max-pool). None keeps the ImageNet stem. Taken from a 3-D
            ``input_shape`` when not given.
        input_shape: Shape of one sample's input: ``[C, H, W]`` images, ``[D]`` features,
            ``[L]`` token ids, ...
        input_dtype: dtype of the input (default float32); int64 means token ids.

    Returns:
        The network.

    Raises:
        InvalidArgumentError: Non-positive sizes, inputs the architecture does not take, or the
            architecture cannot be built so.
        UnknownNameError: ``spec`` names no known model.
        PluginError: A plug-in cannot be loaded, fails, or returns no ``nn.Module``.
    """
    inputs = model_inputs(
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        input_shape=input_shape,
        input_dtype=input_dtype,
    )
    builtin = BUILTIN_MODELS.get(spec)
    if builtin is not None:
        if not builtin.accepts(inputs):
            raise InvalidArgumentError(f"model '{spec}' takes {builtin.takes}, not {inputs.describe()}")
        return builtin.factory(inputs)
    name = spec.removeprefix(_TORCHVISION_PREFIX)
    if name in torchvision_model_names():
        if not inputs.is_image or inputs.in_channels is None:
            raise InvalidArgumentError(f"torchvision model '{name}' takes {_IMAGES}, not {inputs.describe()}")
        return _build_torchvision(name, num_classes, inputs.in_channels, inputs.input_size)
    if _is_plugin_spec(spec):
        return _build_plugin(spec, inputs)
    raise _unknown_model(spec)


def model_inputs(
    *,
    num_classes: int,
    in_channels: int | None = None,
    input_size: int | None = None,
    input_shape: Sequence[int] | None = None,
    input_dtype: torch.dtype | None = None,
) -> ModelInputs:
    """Check and combine the descriptions of a model's inputs (see :func:`build_model`).

    Raises:
        InvalidArgumentError: A size is not a positive integer, neither ``input_shape`` nor
            ``in_channels`` is given, or ``in_channels`` contradicts ``input_shape``.
    """
    _check_sizes(num_classes=num_classes, in_channels=in_channels, input_size=input_size)
    shape = None if input_shape is None else tuple(input_shape)
    if shape is not None:
        if not shape or any(
            isinstance(size, bool) or not isinstance(size, int) or size < 1 for size in shape
        ):
            raise InvalidArgumentError(f"input shape must be positive integers, got {list(shape)}")
    elif in_channels is None:
        raise InvalidArgumentError("a model needs its input shape (or the input channels of images)")
    dtype = torch.float32 if input_dtype is None else input_dtype
    if shape is not None and len(shape) == 3 and dtype.is_floating_point:
        if in_channels is not None and in_channels != shape[0]:
            raise InvalidArgumentError(
                f"input channels {in_channels} contradict the input shape {list(shape)}"
            )
        in_channels, input_size = shape[0], shape[-1] if input_size is None else input_size
    return ModelInputs(num_classes, shape, dtype, in_channels, input_size)


def load_model(
    spec: str,
    *,
    num_classes: int,
    in_channels: int | None = None,
    input_size: int | None = None,
    input_shape: Sequence[int] | None = None,
    input_dtype: torch.dtype | None = None,
    weights: str | os.PathLike[str] | None = None,
    random_weights: bool = False,
    role: str = "teacher",
) -> ModelSource:
    """Build a model and give it trained weights, or random ones only when asked to.

    Args:
        spec: As for :func:`build_model`.
        num_classes: Output classes.
        in_channels: As for :func:`build_model`.
        input_size: As for :func:`build_model`.
        input_shape: As for :func:`build_model`.
        input_dtype: As for :func:`build_model`.
        weights: A plain ``state_dict`` file or a softlabels checkpoint to load.
        random_weights: Accept the fresh random weights of a built-in or torchvision model.
        role: ``teacher`` or ``student``; names the option to suggest in error messages.

    Returns:
        The model and the provenance of its weights. Plug-ins are trusted to bring their own
        weights, so they need neither ``weights`` nor ``random_weights``.

    Raises:
        InvalidArgumentError: Both ``weights`` and ``random_weights`` were given.
        WeightsError: No weights for a built-in/torchvision model, or unusable weights.
        UnknownNameError, PluginError: As for :func:`build_model`.
    """
    if weights is not None and random_weights:
        raise InvalidArgumentError(
            f"give either {role} weights ({role}_weights) or random weights (random_weights), not both"
        )
    if weights is None and not random_weights and not _is_plugin_spec(spec):
        # Checked before building so that a forgotten option fails fast.
        if not is_model_name(spec):
            raise _unknown_model(spec)
        raise WeightsError(
            f"model '{spec}' has no trained weights: give a state_dict or softlabels checkpoint file "
            f"({role}_weights) or accept random weights (random_weights)"
        )
    module = build_model(
        spec,
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        input_shape=input_shape,
        input_dtype=input_dtype,
    )
    if weights is None:
        return ModelSource(spec, module, count_parameters(module), None, None)
    state_dict, sha256 = read_weights(weights)
    apply_weights(module, state_dict, source=os.fspath(weights), model_spec=spec)
    return ModelSource(spec, module, count_parameters(module), sha256, os.fspath(weights))


def count_parameters(module: nn.Module) -> int:
    """Number of parameter elements of ``module``."""
    return sum(parameter.numel() for parameter in module.parameters())


@functools.cache
def torchvision_model_names() -> frozenset[str]:
    """Names of torchvision's image-classification models."""
    return frozenset(torchvision.models.list_models(module=torchvision.models))


def is_model_name(spec: str) -> bool:
    """A built-in model or a torchvision classification architecture (``torchvision:`` prefix optional)."""
    return spec in BUILTIN_MODELS or spec.removeprefix(_TORCHVISION_PREFIX) in torchvision_model_names()


def _unknown_model(spec: str) -> UnknownNameError:
    return UnknownNameError(
        f"unknown model '{spec}': built-ins are {', '.join(BUILTIN_MODELS)}; torchvision classification "
        "names such as resnet18 also work (torchvision.models.list_models()), as do plug-ins "
        "'module:callable' and 'file.py:callable'"
    )


def _is_plugin_spec(spec: str) -> bool:
    return spec not in BUILTIN_MODELS and not spec.startswith(_TORCHVISION_PREFIX) and is_plugin_ref(spec)


def _check_sizes(*, num_classes: int, in_channels: int | None, input_size: int | None) -> None:
    sizes = {"num_classes": num_classes, "in_channels": in_channels, "input_size": input_size}
    for name, value in sizes.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InvalidArgumentError(f"{name} must be a positive integer, got {value!r}")


def _build_torchvision(name: str, num_classes: int, in_channels: int, input_size: int | None) -> nn.Module:
    kwargs = _TORCHVISION_EXTRA_KWARGS.get(name, {})
    try:
        module: nn.Module = torchvision.models.get_model(
            name, weights=None, num_classes=num_classes, **kwargs
        )
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"torchvision model '{name}' cannot be built: {first_line(exc)}") from exc
    if (
        isinstance(module, torchvision.models.ResNet)
        and input_size is not None
        and input_size <= _SMALL_INPUT_MAX
    ):
        module.conv1 = _fresh_conv(in_channels, module.conv1.out_channels, kernel_size=3, stride=1, padding=1)
        module.maxpool = nn.Identity()
    elif in_channels != 3:
        _replace_first_conv(module, name, in_channels)
    return module


def _replace_first_conv(module: nn.Module, name: str, in_channels: int) -> None:
    for path, layer in module.named_modules():
        if isinstance(layer, nn.Conv2d):
            if layer.groups != 1:
                raise InvalidArgumentError(f"torchvision model '{name}' starts with a grouped convolution")
            parent_path, _, attribute = path.rpartition(".")
            replacement = _fresh_conv(
                in_channels,
                layer.out_channels,
                kernel_size=layer.kernel_size,
                stride=layer.stride,
                padding=layer.padding,
                dilation=layer.dilation,
                bias=layer.bias is not None,
            )
            setattr(module.get_submodule(parent_path), attribute, replacement)
            return
    raise InvalidArgumentError(f"torchvision model '{name}' has no Conv2d to adapt to {in_channels} channels")


def _fresh_conv(in_channels: int, out_channels: int, *, bias: bool = False, **geometry: Any) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, bias=bias, **geometry)
    # The initialisation torchvision's CNNs give the convolutions they build.
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


def _build_plugin(spec: str, inputs: ModelInputs) -> nn.Module:
    factory = load_callable(spec, what="model")
    try:
        module = factory(**_plugin_arguments(factory, inputs))
    except SoftLabelsError:
        raise
    except Exception as exc:
        raise PluginError(f"model plug-in '{spec}' failed: {first_line(exc)}") from exc
    if not isinstance(module, nn.Module):
        raise PluginError(f"model plug-in '{spec}' returned a {type(module).__name__}, not a torch.nn.Module")
    return module


def _plugin_arguments(factory: Callable[..., Any], inputs: ModelInputs) -> dict[str, Any]:
    """The keywords a model plug-in is called with: those of its signature (all with ``**kwargs``).

    Plug-ins written for images only, ``callable(num_classes, in_channels)``, keep working.
    """
    offered: dict[str, Any] = {"num_classes": inputs.num_classes}
    if inputs.input_shape is not None:
        offered["input_shape"] = inputs.input_shape
    offered["input_dtype"] = inputs.input_dtype
    if inputs.is_image:
        offered["in_channels"] = inputs.in_channels
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # no signature to read (some builtins): offer everything
        return offered
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters):
        return offered
    named = {parameter.name for parameter in parameters}
    return {name: value for name, value in offered.items() if name in named}
