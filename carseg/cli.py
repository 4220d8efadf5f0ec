"""The `carseg` console script: data utilities (more commands come with later features)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from carseg.errors import exit_on_user_error


def _synth(args: argparse.Namespace) -> None:
    from carseg.data.synthetic import SynthSpec, write_synthetic

    spec = SynthSpec(num_cars=args.num_cars, width=args.width, height=args.height, seed=args.seed)
    out = write_synthetic(args.dir, spec)
    print(
        f"carseg: synthetic Carvana-layout set ({spec.num_cars} cars x 16 views, {spec.width}x{spec.height}) in {out}"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="carseg", description="carseg: car segmentation on Carvana-style photos")
    commands = parser.add_subparsers(dest="command", required=True)
    data = commands.add_parser("data", help="data sets").add_subparsers(dest="data_command", required=True)
    synth = data.add_parser("synth", help="write the synthetic Carvana-layout data set to DIR")
    synth.add_argument("dir")
    synth.add_argument("--num-cars", type=int, default=48)
    synth.add_argument("--width", type=int, default=480, help="image width (1918 for Carvana's full size)")
    synth.add_argument("--height", type=int, default=320, help="image height (1280 for Carvana's full size)")
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(func=_synth)
    return parser


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
