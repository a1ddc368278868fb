"""Every log line carries its rank; ranks other than 0 stay quiet at INFO unless asked."""

from __future__ import annotations

import logging

import pytest

from train.log_setup import setup_logging


@pytest.fixture(autouse=True)
def _restore_root_logger():
    """setup_logging binds the root handler to this test's captured stderr, which pytest closes after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize(
    ("rank", "all_ranks", "info_shown"), [(0, False, True), (1, False, False), (1, True, True)]
)
def test_rank_in_lines_and_quiet_other_ranks(rank: int, all_ranks: bool, info_shown: bool, capsys) -> None:
    setup_logging("INFO", all_ranks=all_ranks, rank=rank)
    log = logging.getLogger("cyclecorr.test")
    log.info("hello info")
    log.warning("hello warning")
    err = capsys.readouterr().err
    assert f"[rank {rank}] WARNING cyclecorr.test: hello warning" in err
    assert ("hello info" in err) is info_shown
