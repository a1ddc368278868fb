"""Arrays held in RAM (least recently used dropped first), shared by a rank's threads: the encoded bytes
of whole files (for DALI) and the decoded frames of whole videos (for PyAV-routed samples)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path

import numpy as np


class RamCache:
    """Arrays up to `max_bytes` in total; one larger than that is loaded every time and not kept.

    `get(key, load)` runs `load` at most once per key while the key is held, even when several threads
    ask for it at once (they wait for the first), so nothing is read or decoded twice.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()
        self._loading: dict[Hashable, threading.Lock] = {}
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, load: Callable[[], np.ndarray]) -> np.ndarray:
        with self._lock:
            data = self._lookup(key)
            if data is not None:
                return data
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:  # another thread may have loaded it while this one waited
                data = self._lookup(key)
                if data is not None:
                    return data
                self.misses += 1
            try:
                data = load()
                self._keep(key, data)
            finally:
                with self._lock:
                    self._loading.pop(key, None)
        return data

    def _lookup(self, key: Hashable) -> np.ndarray | None:
        data = self._items.get(key)
        if data is not None:
            self._items.move_to_end(key)
            self.hits += 1
        return data

    def _keep(self, key: Hashable, data: np.ndarray) -> None:
        if data.nbytes > self.max_bytes:
            return
        with self._lock:
            if key not in self._items:
                self._items[key] = data
                self._held += data.nbytes
            while self._held > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self._held -= dropped.nbytes

    def forget(self, key: Hashable) -> None:
        """Drop one entry (after its file failed to decode, so a retry reads it again)."""
        with self._lock:
            data = self._items.pop(key, None)
            if data is not None:
                self._held -= data.nbytes

    @property
    def held_bytes(self) -> int:
        return self._held


class FileBytesCache(RamCache):
    """The bytes of whole files."""

    def get(self, path: str) -> np.ndarray:  # type: ignore[override]
        """The file's bytes as uint8 [size] (read-only; raises OSError when it cannot be read)."""
        return super().get(path, lambda: np.frombuffer(Path(path).read_bytes(), dtype=np.uint8))
