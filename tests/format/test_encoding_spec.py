"""``EncodingSpec``: the one value for format, value dtype, k, samples and seed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from softlabels.errors import InvalidSettingError, UnknownNameError
from softlabels.format.encoding_spec import EncodingSpec
from softlabels.format.encodings import SampledEncoding, TopKEncoding


def test_create_fills_in_what_the_format_implies() -> None:
    assert EncodingSpec.create() == EncodingSpec("full", "float16")
    # The command line's float16 and seed 0 defaults are dropped where they do not apply.
    assert EncodingSpec.create("sampled", dtype="float16", samples=8, seed=None) == EncodingSpec(
        "sampled", None, None, 8, 0
    )
    assert EncodingSpec.create("topk", k=5, seed=0) == EncodingSpec("topk", "float16", 5)


@pytest.mark.parametrize(
    "arguments, setting, message",
    [
        ({"format": "topk"}, "k", "format topk needs k"),
        ({"format": "topk", "k": 0}, "k", "k must be >= 1, got 0"),
        ({"format": "topk", "k": 2.5}, "k", "k must be an integer"),
        ({"format": "full", "k": 3}, "k", "k does not apply to format full"),
        ({"format": "sampled"}, "samples", "format sampled needs samples"),
        ({"format": "sampled", "samples": 4, "k": 2}, "k", "k does not apply to format sampled"),
        ({"format": "sampled", "samples": 4, "seed": -1}, "seed", "seed must be >= 0"),
        ({"format": "sampled", "samples": 4, "seed": 2**64}, "seed", "seed must be in"),
        ({"format": "sampled", "samples": 4, "dtype": "int8"}, "dtype", "does not apply to format sampled"),
        ({"format": "full", "seed": 3}, "seed", "seed does not apply to format full"),
        ({"format": "full", "dtype": "float64"}, "dtype", "value dtype 'float64' is not one of"),
    ],
)
def test_impossible_combinations_name_the_setting(
    arguments: dict[str, object], setting: str, message: str
) -> None:
    with pytest.raises(InvalidSettingError, match=message) as caught:
        EncodingSpec.create(**arguments)  # type: ignore[arg-type]
    assert caught.value.setting == setting
    assert "--" not in str(caught.value)  # no command-line wording below the CLI


def test_unknown_format_is_refused() -> None:
    with pytest.raises(UnknownNameError, match="unknown label format 'dense'"):
        EncodingSpec.create("dense")


def test_build_and_layout_round_trip() -> None:
    for spec in (
        EncodingSpec.create("full", dtype="int8"),
        EncodingSpec.create("topk", k=3, dtype="bfloat16"),
        EncodingSpec.create("sampled", samples=16, seed=7),
    ):
        encoding = spec.build()
        assert encoding.name == spec.format
        assert EncodingSpec.from_layout(encoding.name, encoding.params()) == spec
    assert isinstance(EncodingSpec.create("topk", k=3).build(), TopKEncoding)
    sampled = EncodingSpec.create("sampled", samples=16, seed=7).build()
    assert isinstance(sampled, SampledEncoding) and (sampled.samples, sampled.seed) == (16, 7)


def test_describe() -> None:
    assert EncodingSpec.create("topk", k=5).describe() == "topk k=5 float16"
    assert EncodingSpec.create("sampled", samples=16).describe() == "sampled S=16 seed 0"
    assert EncodingSpec.create("full", dtype="int8").describe() == "full int8"


def test_spec_and_generate_config_import_without_torch() -> None:
    code = (
        "import sys\n"
        "from softlabels.format.encoding_spec import EncodingSpec\n"
        "from softlabels.processing.generation.config import GenerateConfig\n"
        "GenerateConfig(dataset='digits', teacher='cnn', temperature=2.0, out='s.zarr',\n"
        "               encoding=EncodingSpec.create('topk', k=3))\n"
        "print(','.join(m for m in ('torch', 'zarr', 'numpy') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
