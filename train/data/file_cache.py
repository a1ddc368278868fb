"""Encoded video files held in RAM (least recently used dropped first), shared by a rank's threads."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np


class FileBytesCache:
    """The bytes of whole files, up to `max_bytes` in total; a larger file is read every time."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._files: OrderedDict[str, np.ndarray] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, path: str) -> np.ndarray:
        """The file's bytes as uint8 [size] (read-only; raises OSError when it cannot be read)."""
        with self._lock:
            data = self._files.get(path)
            if data is not None:
                self._files.move_to_end(path)
                self.hits += 1
                return data
            self.misses += 1
        data = np.frombuffer(Path(path).read_bytes(), dtype=np.uint8)
        if data.nbytes <= self.max_bytes:
            with self._lock:
                if path not in self._files:
                    self._files[path] = data
                    self._held += data.nbytes
                while self._held > self.max_bytes:
                    _, dropped = self._files.popitem(last=False)
                    self._held -= dropped.nbytes
        return data

    def forget(self, path: str) -> None:
        """Drop one file (after it failed to decode, so a retry reads it again)."""
        with self._lock:
            data = self._files.pop(path, None)
            if data is not None:
                self._held -= data.nbytes
