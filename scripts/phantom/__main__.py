"""Command line of the phantom generator.

Examples::

    python -m scripts.phantom --output phantom_data                      # 150 subjects, seed 0
    python -m scripts.phantom --output /tmp/p --subjects 10 --seed 3 --workers 2
    python -m scripts.phantom --output /tmp/p --subjects 10 --frames 30 --cine_truth    # + the truth of every frame
    python -m scripts.phantom --sample sample_data                       # regenerate sample_data/patient001
    python -m scripts.phantom --preview phantom_data/training/patient001 --png preview.png
"""

from __future__ import annotations

import argparse
import sys
import time

from .generator import DEFAULT_SEED, generate_dataset, write_sample
from .parameters import GenerationOptions


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of ``python -m scripts.phantom``."""
    parser = argparse.ArgumentParser(
        prog="python -m scripts.phantom",
        description="Synthetic cardiac cine MRI phantom in ACDC layout with true ED<->ES displacement fields.",
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--output", help="root directory of the data set (training/ and testing/ are created)")
    mode.add_argument("--sample", metavar="DIR", help="write the committed sample DIR/patient001 (no 4D cine)")
    mode.add_argument("--preview", metavar="PATIENT_DIR", help="draw a picture of one ACDC patient folder")
    parser.add_argument("--subjects", type=int, default=150, help="number of patients, 1-150 (default 150)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"data set seed (default {DEFAULT_SEED})")
    parser.add_argument("--workers", type=int, default=2, help="parallel processes (default 2)")
    parser.add_argument("--frames", type=int, default=None, help="force NbFrame (default: 12-20 per subject)")
    parser.add_argument("--overwrite", action="store_true", help="allow a non-empty output directory")
    parser.add_argument(
        "--cine_truth",
        action="store_true",
        help="also write the truth of every frame (labels, ED -> frame fields, true function.json; about 1 MB per "
        "frame) for python -m scripts.benchmark cine; the other files are unchanged",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--png", default="phantom_preview.png", help="output image of --preview")
    parser.add_argument("--slice", type=int, default=None, help="0-based slice of --preview (default: mid LV)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        if args.preview:
            from .preview import render_preview

            print(render_preview(args.preview, args.png, args.slice))
        elif args.sample:
            print(write_sample(args.sample, seed=args.seed))
        else:
            start = time.perf_counter()
            summaries = generate_dataset(
                args.output,
                n_subjects=args.subjects,
                seed=args.seed,
                workers=args.workers,
                overwrite=args.overwrite,
                options=GenerationOptions(n_frames=args.frames),
                progress=not args.no_progress,
                cine_truth=args.cine_truth,
            )
            print(f"wrote {len(summaries)} subjects to {args.output} in {time.perf_counter() - start:.1f} s")
    except (FileExistsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
