"""Console logging with the rank in every line; only rank 0 speaks at INFO unless asked."""

from __future__ import annotations

import logging
import os
import sys


def env_rank() -> int:
    """This process's global rank as the launcher set it (0 when not launched distributed)."""
    return int(os.environ.get("RANK", "0"))


def setup_logging(level: str = "INFO", all_ranks: bool = False, rank: int | None = None) -> None:
    """Route `logging` to stderr as `time [rank R] LEVEL name: message`.

    Ranks other than 0 log at WARNING unless `all_ranks`, so N GPUs do not print N copies.
    """
    rank = env_rank() if rank is None else rank
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    )
    effective = level if (rank == 0 or all_ranks) else "WARNING"
    logging.basicConfig(level=effective, handlers=[handler], force=True)
    # Libraries that are chatty at INFO: keep their warnings, drop their progress noise.
    for name in ("mlflow", "alembic", "urllib3", "DeepSpeed"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(effective)))
