"""The bundle's own files: metadata against the schema, configs parseable, pins consistent."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from monai.bundle import ConfigParser

from scripts.networks import PRESETS, VARIANTS

BUNDLE_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = BUNDLE_ROOT / "configs"


def _metadata() -> dict:
    return json.loads((CONFIGS / "metadata.json").read_text())


def test_metadata_validates_against_the_20240725_schema() -> None:
    schema = json.loads((BUNDLE_ROOT / "tests" / "schemas" / "meta_schema_20240725.json").read_text())
    jsonschema.validate(_metadata(), schema)


def test_schema_rejects_metadata_without_a_required_field() -> None:
    schema = json.loads((BUNDLE_ROOT / "tests" / "schemas" / "meta_schema_20240725.json").read_text())
    metadata = _metadata()
    del metadata["network_data_format"]["inputs"]["image"]["num_channels"]
    with pytest.raises(jsonschema.ValidationError, match="num_channels"):
        jsonschema.validate(metadata, schema)


def test_changelog_contains_the_current_version() -> None:
    metadata = _metadata()
    assert metadata["version"] in metadata["changelog"]


def test_network_data_format_is_two_channels_in_three_out() -> None:
    formats = _metadata()["network_data_format"]
    assert formats["inputs"]["image"]["num_channels"] == 2
    assert formats["outputs"]["pred"]["num_channels"] == 3
    assert formats["outputs"]["pred"]["format"] == "displacement"


def test_metadata_pins_match_requirements_txt() -> None:
    pins = {}
    for line in (BUNDLE_ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower()] = version
    metadata = _metadata()
    assert pins.pop("monai") == metadata["monai_version"]
    assert pins.pop("torch") == metadata["pytorch_version"]
    assert pins.pop("numpy") == metadata["numpy_version"]
    assert pins == {name.lower(): version for name, version in metadata["required_packages_version"].items()}


# Standalone configs, and override files parsed merged after the config they override, as users run them.
CONFIG_STACKS = [
    ["train.json"],
    ["train.json", "evaluate.json"],
    ["train.json", "multi_gpu_train.json"],
    ["inference.json"],
    ["cine.json"],
] + [
    [base, f"variants/{variant.name}"]
    for base in ("train.json", "inference.json")
    for variant in sorted((CONFIGS / "variants").glob("*.json"))
]


@pytest.mark.parametrize("stack", CONFIG_STACKS, ids=lambda stack: "+".join(stack))
def test_every_config_parses_with_monai(stack: list[str]) -> None:
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / name) for name in stack])
    parser.parse()
    # The network every stack describes is one the bundle can build.
    assert parser.get("network_def")["_target_"] == "scripts.networks.bundle_network"
    assert parser.get_parsed_content("architecture") in (*VARIANTS, "voxelmorph")
    assert parser.get_parsed_content("network_preset") in PRESETS


def test_every_config_file_is_covered() -> None:
    covered = {name for stack in CONFIG_STACKS for name in stack}
    on_disk = {str(path.relative_to(CONFIGS)) for path in CONFIGS.rglob("*.json")} - {"metadata.json"}
    assert on_disk <= covered


def test_variant_overrides_switch_the_network() -> None:
    for variant, expected in [
        ("lapwarp", "lapwarp"),
        ("lkunet", "lkunet"),
        ("voxelmorph", "voxelmorph"),
        ("memwarp_no_pyramid", "memwarp_no_pyramid"),
    ]:
        parser = ConfigParser()
        parser.read_config([str(CONFIGS / "inference.json"), str(CONFIGS / "variants" / f"{variant}.json")])
        assert parser.get_parsed_content("architecture") == expected
        assert parser.get("network_def")["architecture"] == "@architecture"
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "inference.json"), str(CONFIGS / "variants" / "paper.json")])
    assert parser.get_parsed_content("network_preset") == "paper"


def test_configs_are_four_space_indented_json() -> None:
    for path in sorted(CONFIGS.rglob("*.json")):
        text = path.read_text()
        data = json.loads(text)
        if isinstance(data, dict) and data:
            first_key_line = text.splitlines()[1]
            assert first_key_line.startswith('    "') and not first_key_line.startswith("     "), path
