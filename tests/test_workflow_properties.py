"""The bundle's workflows pass MONAI's property checks with the exact references the model zoo expects."""

from __future__ import annotations

from pathlib import Path

import pytest
from monai.bundle import ConfigParser, ConfigWorkflow

BUNDLE_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = BUNDLE_ROOT / "configs"
TRAIN = [CONFIGS / "train.json"]
EVALUATE = [CONFIGS / "train.json", CONFIGS / "evaluate.json"]


@pytest.fixture(scope="module")
def overrides(phantom_dataset: Path, phantom_datalist, tmp_path_factory: pytest.TempPathFactory) -> dict:
    run = tmp_path_factory.mktemp("properties")
    datalist = phantom_datalist(run, training=[1])
    return {
        "bundle_root": str(BUNDLE_ROOT),
        "dataset_dir": str(phantom_dataset),
        "datalist": str(datalist),
        "ckpt_dir": str(run / "models"),
        "output_dir": str(run / "log"),
        "network_preset": "tiny",
        "cache_rate": 0.0,
        "num_workers": 0,
    }


@pytest.mark.parametrize(("config_files", "workflow_type"), [(TRAIN, "train"), (EVALUATE, "train"), (EVALUATE, "eval")])
def test_check_properties_reports_nothing_missing_or_wrong(
    config_files: list[Path], workflow_type: str, overrides: dict
) -> None:
    workflow = ConfigWorkflow(
        workflow_type=workflow_type,
        config_file=[str(path) for path in config_files],
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"),
        **overrides,
    )
    workflow.initialize()
    assert workflow.check_properties() == []


def test_train_config_uses_the_zoo_references() -> None:
    parser = ConfigParser()
    parser.read_config([str(path) for path in TRAIN])
    assert parser["train#trainer#train_handlers"] == "@train#handlers"
    assert parser["train#dataset#transform"] == "@train#preprocessing"
    assert parser["validate#dataset#transform"] == "@validate#preprocessing"
    assert parser["validate#evaluator#val_handlers"] == "@validate#handlers"
    assert parser["validate#evaluator#key_val_metric"] == "@validate#key_metric"
    (validation,) = [h for h in parser["train#handlers"] if h["_target_"] == "ValidationHandler"]
    assert validation["validator"] == "@validate#evaluator" and validation["interval"] == "@val_interval"
    assert parser["network_def"] == {
        "_target_": "scripts.networks.bundle_network",
        "architecture": "@architecture",
        "preset": "@network_preset",
    }
    # `run training` and plain `run` execute the same expressions: the shipped-weights guard, then the trainer
    assert parser["run"] == "$@training" and parser["training"][-1] == "$@train#trainer.run()"
    assert [step["_target_"] for step in parser["training"][:-1]] == ["scripts.engine.refuse_shipped_files"]


def test_evaluate_overrides_define_the_evaluating_alias() -> None:
    parser = ConfigParser()
    parser.read_config([str(path) for path in EVALUATE])
    assert parser["run"] == "$@evaluating" and parser["evaluating"] == ["$@evaluator.run()"]
    assert parser["dataset#transform"] == "@preprocessing" and parser["evaluator#val_handlers"] == "@handlers"
    assert parser["training"][-1] == "$@train#trainer.run()"  # training keys stay intact in the merged config


def test_unsupervised_variant_zeroes_the_mask_loss_weights() -> None:
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "variants" / "unsupervised.json")])
    assert parser["mask_dice_weight"] == 0.0 and parser["region_dice_weight"] == 0.0
    assert parser["similarity_weight"] == 1.0 and parser["regularisation_weight"] == 0.01
