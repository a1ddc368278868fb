"""train.data.file_cache: the RAM bound, least-recently-used eviction, one load per key across threads."""

from __future__ import annotations

import threading
import time

import numpy as np

from train.data.file_cache import FileBytesCache, RamCache


def test_bound_and_lru_eviction() -> None:
    cache = RamCache(max_bytes=250)
    loads: list[str] = []

    def loader(key: str):
        return lambda: loads.append(key) or np.zeros(100, dtype=np.uint8)

    for key in "abc":  # c pushes out a (250 bytes hold two)
        cache.get(key, loader(key))
    assert cache.held_bytes == 200
    cache.get("b", loader("b"))  # held: no load
    cache.get("a", loader("a"))  # evicted: loaded again, evicting c (b was used more recently)
    cache.get("b", loader("b"))
    assert loads == ["a", "b", "c", "a"]
    cache.forget("b")
    assert cache.held_bytes == 100
    big = cache.get("big", lambda: np.zeros(1000, dtype=np.uint8))  # larger than the bound: not kept
    assert big.nbytes == 1000 and cache.held_bytes == 100


def test_concurrent_gets_load_once() -> None:
    cache = RamCache(max_bytes=1 << 20)
    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.2)
        return np.ones(10)

    threads = [threading.Thread(target=cache.get, args=("k", slow)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and cache.misses == 1 and cache.hits == 3


def test_file_bytes(tmp_path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    cache = FileBytesCache(1 << 10)
    assert cache.get(str(path)).tobytes() == b"abc"
    path.write_bytes(b"changed")
    assert cache.get(str(path)).tobytes() == b"abc"  # held
