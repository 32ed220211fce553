"""The one read-ahead helper: order kept, errors passed on, the thread stops with its consumer."""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest

from crystalseg.prefetch import ChunkPrefetcher, prefetch


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "crystalseg-prefetch"]


def test_prefetch_keeps_order_passes_errors_and_stops_with_its_consumer() -> None:
    assert list(prefetch(iter(range(50)), depth=2)) == list(range(50))

    def failing():
        yield from range(3)
        raise ValueError("bad frame 3")

    got = []
    with pytest.raises(ValueError, match="bad frame 3"):
        for v in prefetch(failing()):
            got.append(v)
    assert got == [0, 1, 2]
    endless = prefetch(itertools.count(), depth=2)
    assert [next(endless), next(endless)] == [0, 1]
    endless.close()
    assert not prefetch_threads()


def test_chunks_are_read_ahead_in_order_and_no_read_runs_after_the_block() -> None:
    frames = np.arange(40).reshape(10, 2, 2)
    chunks = [(0, 4), (4, 8), (8, 10)]
    reads: list[tuple[int, int]] = []

    def read(start: int, stop: int) -> np.ndarray:
        reads.append((start, stop))
        return frames[start:stop]

    with ChunkPrefetcher(read, chunks) as ahead:
        got = [(a, b, f.copy()) for a, b, f in ahead]
    assert [(a, b) for a, b, _ in got] == chunks == reads
    np.testing.assert_array_equal(np.concatenate([f for _, _, f in got]), frames)

    # leaving the block early: the thread ends, and at most depth + 1 chunks were read
    reads.clear()
    many = [(i, i + 1) for i in range(10)]
    with ChunkPrefetcher(read, many, depth=2) as ahead:
        assert next(iter(ahead))[:2] == (0, 1)
    assert not prefetch_threads()
    assert reads == many[: len(reads)] and len(reads) <= 4


def test_a_failed_read_reaches_the_loop() -> None:
    def read(start: int, stop: int) -> np.ndarray:
        if start == 4:
            raise OSError(f"chunk {start}:{stop} unreadable")
        return np.zeros((stop - start, 2, 2))

    with pytest.raises(OSError, match="chunk 4:8 unreadable"):
        with ChunkPrefetcher(read, [(0, 4), (4, 8), (8, 10)]) as ahead:
            for _ in ahead:
                pass
    assert not prefetch_threads()
