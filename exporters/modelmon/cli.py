"""The ``modelmon`` command."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from .serving.reference import DEFAULT_BINS, DEFAULT_TOP_K, Reference
from .analysis.training_csv import read_csv


def _names(text: str | None) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()] if text else []


def _score(item: str) -> tuple[str, float]:
    metric, _, score = item.partition("=")
    try:
        return metric.strip(), float(score)
    except ValueError:
        raise ValueError(f"--evaluation: expected METRIC=NUMBER, got {item!r}") from None


def profile(args: argparse.Namespace) -> int:
    data = read_csv(Path(args.data))
    calibration = {}
    if args.holdout is not None:
        calibration = dict(holdout=read_csv(Path(args.holdout)), target=args.target,
                           probabilities=_names(args.probabilities), classes=_names(args.classes) or None,
                           positive=args.positive)
    elif args.target or args.probabilities or args.classes or args.positive:
        raise ValueError("--target, --probabilities, --classes and --positive calibrate on a --holdout set")
    ref = Reference.from_data(
        data,
        model=args.model,
        version=args.version,
        prediction=_names(args.prediction),
        categorical=_names(args.categorical),
        text=_names(args.text),
        exclude=_names(args.exclude),
        trained_at=args.trained_at,
        bins=args.bins,
        top_k=args.top_k,
        evaluation=dict(_score(item) for item in _names(args.evaluation)),
        **calibration,
    )
    ref.save(args.output)
    print(
        f"wrote {args.output}: {len(ref.features)} features, {len(ref.outputs)} outputs, "
        f"{ref.rows} rows, hash {ref.hash}"
    )
    if ref.calibration is not None:
        scores = ", ".join(f"{k} {v:.4f}" for k, v in ref.evaluation.items())
        print(f"calibrated on {ref.calibration.rows} hold-out rows, classes {list(ref.calibration.classes)}: {scores}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelmon", description="Monitoring for models in production.")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("profile", help="profile training data into a reference YAML")
    p.add_argument("data", help="training data, CSV with a header row")
    p.add_argument("--model", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--prediction", help="output column(s), comma-separated")
    p.add_argument("--categorical", help="columns to treat as categorical, comma-separated")
    p.add_argument("--text", help="free-text columns (binned by token count, with a vocabulary), comma-separated")
    p.add_argument("--exclude", help="columns that are neither features nor outputs (ids), comma-separated")
    p.add_argument("--trained-at", help="ISO 8601 training time (default: now)")
    p.add_argument("--bins", type=int, default=DEFAULT_BINS, help="quantile bins per numeric column")
    p.add_argument("--top-k", type=int, default=DEFAULT_TOP_K, help="categories kept per categorical column")
    p.add_argument("--evaluation", help="held-out score(s) of the model, e.g. mae=15000 or accuracy=0.93")
    p.add_argument("--holdout", help="labeled hold-out CSV (not the training data) with the model's class "
                                     "probabilities: calibrates them for the estimated quality")
    p.add_argument("--target", help="the hold-out set's label column")
    p.add_argument("--probabilities", help="the hold-out set's probability columns, one per class, in class order")
    p.add_argument("--classes", help="the classes in the order of --probabilities (default: the sorted labels)")
    p.add_argument("--positive", help="a binary model's positive class (default: the second class)")
    p.add_argument("-o", "--output", required=True, help="reference YAML to write")
    p.set_defaults(run=profile)
    from .pipeline import elk_setup, shipper  # these import the elasticsearch package only when run

    shipper.add_parser(commands)
    elk_setup.add_parser(commands)
    from .analysis import report, skew  # scipy and elasticsearch are imported only when these run

    skew.add_parser(commands)
    report.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (OSError, ValueError) as exc:
        print(f"modelmon {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
