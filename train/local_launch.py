"""What launching training processes on this machine needs: a free TCP port and the `deepspeed` launcher."""

from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path


def free_port() -> int:
    """A TCP port nobody on this machine listens on right now (it may be taken before it is bound)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def deepspeed_launcher() -> str:
    """The `deepspeed` launcher beside this interpreter (the project's venv), else the one on PATH."""
    beside = Path(sys.executable).parent / "deepspeed"
    return str(beside) if beside.exists() else shutil.which("deepspeed") or "deepspeed"
