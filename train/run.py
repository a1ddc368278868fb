#!/usr/bin/env python
"""Train a method on videos.

    python train/run.py --config configs/smoke/cycletime.yaml [key.sub=value ...]
    deepspeed --num_gpus 2 train/run.py --config configs/cycletime.yaml
    deepspeed --num_nodes 2 --hostfile launch/hostfile train/run.py --config configs/cycletime.yaml

Runs as a script from any working directory (the DeepSpeed launcher starts it that way).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Run as a script, Python puts train/ first on sys.path, where its modules could shadow top-level
# packages; put the repository root there instead so `import train...` works from anywhere.
_HERE = Path(__file__).resolve().parent
if sys.path and Path(sys.path[0] or ".").resolve() == _HERE:
    sys.path[0] = str(_HERE.parent)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train TCC or CycleTime. Overrides: key.sub=value (YAML scalars).",
    )
    parser.add_argument("--config", help="YAML config file (configs/*.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. optim.lr=3e-4")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument(
        "--help-config", nargs="?", const="", metavar="METHOD", help="list every config key and exit"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from train.config import ConfigError, config_help, dump_config, load_config

    if args.help_config is not None:
        print(config_help(args.help_config or None))
        return 0
    if not args.config:
        print("error: --config FILE is required (e.g. configs/smoke/cycletime.yaml)", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    if args.print_config:
        print(dump_config(cfg), end="")
        return 0

    import torch

    from train.log_setup import setup_logging
    from train.trainer import EXIT_OUT_OF_MEMORY, run_training

    setup_logging(cfg.log.level, cfg.log.all_ranks)
    try:
        return run_training(cfg)
    except ConfigError as err:  # found while setting up (a missing data.root, trainer.resume=never)
        print(f"config error: {err}", file=sys.stderr)
        return 2
    except torch.OutOfMemoryError:
        # The trainer has logged the step, what to lower and the checkpoint to resume from; the
        # traceback into the compiled graph would only bury that.
        return EXIT_OUT_OF_MEMORY


if __name__ == "__main__":
    sys.exit(main())
