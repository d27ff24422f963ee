"""The loss-balance mode: gradient norms per loss term and network part, checked against a plain backward pass."""

from __future__ import annotations

import math

import pytest
import torch

from scripts.benchmark.loss_balance import PARTS, balance_table, main, parameter_part, term_gradient_norms, term_losses
from scripts.losses import MemWarpLoss
from scripts.networks import MemWarp

WEIGHTS = {"similarity": 1.0, "mask_dice": 1.0, "region_dice": 1.0, "regularisation": 0.01}


def tiny_network(variant: str) -> MemWarp:
    torch.manual_seed(0)
    network = MemWarp(
        variant, channels=(4, 8, 8, 8, 8), head_channels=(4,) * 5, flow_feature_channels=4, memory_hidden=(8,)
    )
    return network.train()


def tiny_batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(2, 2, 1, 32, 32, 4, generator=generator)
    labels = torch.randint(0, 4, (2, 2, 1, 32, 32, 4), generator=generator).float()
    return {"moving": images[0], "fixed": images[1], "moving_label": labels[0], "fixed_label": labels[1]}


def test_parameter_parts_from_names():
    assert parameter_part("registration.encoder.levels.0.0.0.weight") == "encoder"
    assert parameter_part("registration.decoder.fuse.2.0.0.weight") == "decoder"
    assert parameter_part("decoder.upsample_features.1.conv.1.bias") == "decoder"
    assert parameter_part("registration.decoder.heads.0.flow_features.0.0.weight") == "flow heads"
    assert parameter_part("decoder.heads.3.to_flow.bias") == "flow heads"
    assert parameter_part("registration.decoder.heads.1.query.0.0.bias") == "memory"
    assert parameter_part("registration.memory.generator.2.weight") == "memory"


def test_memwarp_has_every_part_and_lapwarp_no_memory():
    memwarp_parts = {parameter_part(name) for name, _ in tiny_network("memwarp").named_parameters()}
    lapwarp_parts = {parameter_part(name) for name, _ in tiny_network("lapwarp").named_parameters()}
    assert memwarp_parts == set(PARTS)
    assert lapwarp_parts == {"encoder", "decoder", "flow heads"}


def test_norm_equals_a_plain_backward_of_the_term():
    batch = tiny_batch()
    norms = term_gradient_norms(tiny_network("memwarp"), [batch], term_losses(WEIGHTS))
    for term, loss in (
        ("similarity", MemWarpLoss(1.0, 0.0, 0.0, 0.0)),
        ("region_dice", MemWarpLoss(0.0, 0.0, 1.0, 0.0)),
    ):
        network = tiny_network("memwarp")
        loss(network(batch["moving"], batch["fixed"]), batch).backward()
        expected = math.sqrt(
            sum(
                float(p.grad.pow(2).sum())
                for n, p in network.named_parameters()
                if n.startswith("encoder.") and p.grad is not None
            )
        )
        assert expected > 0
        assert norms["encoder"][term] == pytest.approx(expected, rel=1e-4)


def test_term_weight_scales_its_norms_and_root_mean_square_over_batches():
    batch = tiny_batch()
    single = term_gradient_norms(tiny_network("memwarp"), [batch], term_losses(WEIGHTS))
    tenfold = term_gradient_norms(tiny_network("memwarp"), [batch, batch], term_losses({**WEIGHTS, "similarity": 10.0}))
    for part in PARTS:
        assert tenfold[part]["similarity"] == pytest.approx(10 * single[part]["similarity"], rel=1e-4)
        assert tenfold[part]["mask_dice"] == pytest.approx(single[part]["mask_dice"], rel=1e-4)


def test_no_memory_no_region_dice_gradient():
    norms = term_gradient_norms(tiny_network("lapwarp"), [tiny_batch()], term_losses(WEIGHTS))
    assert set(norms) == {"encoder", "decoder", "flow heads"}
    assert all(norms[part]["region_dice"] == 0.0 for part in norms)
    assert all(norms[part]["similarity"] > 0.0 for part in norms)
    table = balance_table(norms)
    assert (
        table.splitlines()[0]
        == "| part | similarity (share) | mask_dice (share) | region_dice (share) | regularisation (share) |"
    )
    assert "region_dice" in table and "0.00e+00 (0.00 %)" in table.splitlines()[2]


def test_missing_dataset_one_line_exit_2_nothing_written(tmp_path, capsys):
    output = tmp_path / "balance.json"
    code = main(["--dataset_dir", str(tmp_path / "absent"), "--output", str(output), "--pairs", "1"])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(error) == 1 and str(tmp_path / "absent") in error[0]
    assert error[0].startswith("python -m scripts.benchmark loss_balance: ")
    assert not output.exists()
