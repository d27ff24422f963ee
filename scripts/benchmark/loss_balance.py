"""``python -m scripts.benchmark loss_balance``: which term of the training loss trains which part of the network.

MemWarp's loss adds an image similarity (MSE, values around 0.005), a warped-label Dice and the memory's region
Dice (values around 0.3-1) and a regulariser. Adam rescales each parameter's whole gradient, not each term's,
so where the terms share parameters the term with the larger gradient decides the update there. This mode
measures it: for a checkpoint (or the seeded initial weights) and the first training pairs, in training mode
as the trainer runs, the gradient of each weighted term on its own, per part of the network:

- ``encoder``: the Siamese encoder, shared by registration and segmentation;
- ``decoder``: the decoder's upsampling and fusion blocks, also shared;
- ``flow heads``: the layers that turn decoder features into fields (plain heads, the memory heads' flow
  features and fallback);
- ``memory``: the anatomical memory and its query branches (what segments the fixed image).

The figure per (part, term) is the root mean square over batches of the gradient's L2 norm over the part's
parameters. ``share`` is each term's part of the sum of the part's norms. A term that does not apply (no memory,
no labels, weight 0) has no gradient anywhere.

Outputs: a table on stdout and ``--output`` (JSON, written atomically).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from monai.data import DataLoader, Dataset
from torch import nn

from scripts.benchmark.command_line import run_mode
from scripts.data import registration_preprocessing
from scripts.engine import RegistrationPrepareBatch, pair_datalist
from scripts.evaluation import write_json_atomic
from scripts.inference.checkpoint import load_network_weights
from scripts.labels import NETWORK_PIXDIM_MM, NETWORK_SPATIAL_SIZE
from scripts.losses import MemWarpLoss
from scripts.networks import bundle_network

__all__ = ["PARTS", "TERMS", "parameter_part", "term_losses", "term_gradient_norms", "balance_table", "main"]

PARTS = ("encoder", "decoder", "flow heads", "memory")
TERMS = ("similarity", "mask_dice", "region_dice", "regularisation")


def parameter_part(name: str) -> str:
    """The part of the network (one of :data:`PARTS`) a parameter belongs to, from its name in ``named_parameters``
    of the bundle's network (``registration.`` prefix) or of the bare :class:`scripts.networks.MemWarp`."""
    name = name.removeprefix("registration.")
    if name.startswith("encoder."):
        return "encoder"
    if name.startswith("memory.") or ".query." in name:
        return "memory"
    if name.startswith("decoder.heads."):
        return "flow heads"
    return "decoder"


def term_losses(weights: Mapping[str, float]) -> dict[str, MemWarpLoss]:
    """One :class:`MemWarpLoss` per term of :data:`TERMS`, with that term's weight from ``weights`` and the others 0."""
    keys = {term: f"{term}_weight" for term in TERMS}
    return {
        term: MemWarpLoss(**{key: (float(weights[term]) if other == term else 0.0) for other, key in keys.items()})
        for term in TERMS
    }


def term_gradient_norms(
    network: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]], losses: Mapping[str, MemWarpLoss]
) -> dict[str, dict[str, float]]:
    """Per part and term, the root mean square over ``batches`` of the term's gradient norm on the part.

    Args:
        network: called as ``network(moving, fixed)`` and returning the dict :class:`MemWarpLoss` reads; used in
            the mode it is in (training mode reproduces the trainer's batch-norm statistics).
        batches: dicts with ``moving``, ``fixed`` (B, 1, H, W, D) and optionally ``moving_label``, ``fixed_label``.
        losses: term name -> the loss computing that term alone (:func:`term_losses`).

    Returns:
        ``{part: {term: norm}}`` for every part of :data:`PARTS` that has parameters and every term of ``losses``.
    """
    named = [(name, parameter) for name, parameter in network.named_parameters() if parameter.requires_grad]
    parts = [parameter_part(name) for name, _ in named]
    parameters = [parameter for _, parameter in named]
    squares = {part: {term: 0.0 for term in losses} for part in PARTS if part in parts}
    count = 0
    for batch in batches:
        count += 1
        output = network(batch["moving"], batch["fixed"])
        for term, loss in losses.items():
            value = loss(output, batch)
            if not value.requires_grad:
                continue
            gradients = torch.autograd.grad(value, parameters, retain_graph=True, allow_unused=True)
            for part, gradient in zip(parts, gradients):
                if gradient is not None:
                    squares[part][term] += float(gradient.detach().pow(2).sum())
    if count == 0:
        raise ValueError("no batch to measure the gradients on")
    return {part: {term: math.sqrt(total / count) for term, total in terms.items()} for part, terms in squares.items()}


def balance_table(norms: Mapping[str, Mapping[str, float]]) -> str:
    """Markdown table of :func:`term_gradient_norms`' result: one row per part, each term's norm and share."""
    terms = list(next(iter(norms.values())))
    header = "| part | " + " | ".join(f"{term} (share)" for term in terms) + " |"
    lines = [header, "|" + "---|" * (len(terms) + 1)]
    for part, values in norms.items():
        total = sum(values.values())
        cells = [f"{values[term]:.2e} ({100 * values[term] / total:.2f} %)" if total else "0" for term in terms]
        lines.append(f"| {part} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scripts.benchmark loss_balance", description=__doc__)
    parser.add_argument("--dataset_dir", default="", help="ACDC-layout folder (phantom or ACDC database/)")
    parser.add_argument("--datalist", default="", help="datalist JSON (default: the reference split)")
    parser.add_argument("--section", default="training", help="datalist section whose first pairs are used")
    parser.add_argument("--pairs", type=int, default=16, help="how many pairs (default 16)")
    parser.add_argument("--batch_size", type=int, default=4, help="pairs per batch, as in training (default 4)")
    parser.add_argument("--checkpoint", default="", help="weights to measure (default: the initial weights)")
    parser.add_argument("--architecture", default="memwarp")
    parser.add_argument("--preset", default="compact")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights (default 0, as training)")
    for term, default in zip(TERMS, (1.0, 1.0, 1.0, 0.01)):
        parser.add_argument(f"--{term}_weight", type=float, default=default, help=f"as in train.json ({default})")
    parser.add_argument("--spatial_size", nargs=3, type=int, default=list(NETWORK_SPATIAL_SIZE))
    parser.add_argument("--pixdim", nargs=3, type=float, default=list(NETWORK_PIXDIM_MM))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", default="benchmark_loss_balance.json", help="JSON file for the results")
    args = parser.parse_args(argv)
    if args.pairs < 1 or args.batch_size < 1:
        parser.error("--pairs and --batch_size must be at least 1")
    return args


def _batches(args: argparse.Namespace, device: torch.device) -> list[dict[str, torch.Tensor]]:
    """The first ``--pairs`` pairs of the section, preprocessed (no randomisation) and batched as the trainer does:
    its DataLoader collation and :class:`scripts.engine.RegistrationPrepareBatch`'s targets dict."""
    records = pair_datalist(args.dataset_dir, args.datalist, args.section)[: args.pairs]
    preprocessing = registration_preprocessing(args.spatial_size, tuple(args.pixdim), with_labels=True)
    loader = DataLoader(Dataset(records, preprocessing), batch_size=args.batch_size, shuffle=False, num_workers=0)
    prepare_batch = RegistrationPrepareBatch()
    return [prepare_batch(batch, device)[1] for batch in loader]


def run_loss_balance(args: argparse.Namespace) -> dict[str, Any]:
    """Measure, print the table, write ``--output``; returns the report."""
    if args.threads:
        torch.set_num_threads(int(args.threads))
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    network = bundle_network(args.architecture, args.preset)
    if args.checkpoint:
        load_network_weights(network, args.checkpoint, "cpu", args.architecture, args.preset)
    network.to(device).train()
    weights = {term: getattr(args, f"{term}_weight") for term in TERMS}
    batches = _batches(args, device)
    norms = term_gradient_norms(network, batches, term_losses(weights))
    table = balance_table(norms)
    print(table)
    report = {
        "checkpoint": args.checkpoint or f"initial weights, seed {args.seed}",
        "architecture": args.architecture,
        "preset": args.preset,
        "pairs": sum(len(batch["moving"]) for batch in batches),
        "batch_size": args.batch_size,
        "weights": weights,
        "gradient_norms": norms,
        "table": table,
    }
    write_json_atomic(args.output, report)
    print(f"wrote {args.output}")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; a missing or unreadable input (checkpoint, data) ends with its message and exit 2."""
    args = parse_args(argv)
    return run_mode("loss_balance", lambda: run_loss_balance(args))
