"""`make demo`: the main job on its embedded default (generated data, no server to start)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from train.config import dump_config, load_config
from train.log_setup import setup_logging

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger(__name__)


def main() -> int:
    setup_logging()
    cfg = load_config(REPO / "configs/smoke/cycletime.yaml")
    log.info("resolved smoke config:\n%s", dump_config(cfg))
    log.warning("the training engine has not landed yet: the demo stops after checking the config")
    return 0


if __name__ == "__main__":
    sys.exit(main())
