"""Reading ahead: the next items of an iterator, produced in a thread while the caller
works on the current one.

One helper for every stage: training cuts the next batches of crops while the GPU
trains on this one (:mod:`crystalseg.train.learner`); segmentation reads the next
chunks of a run while the model segments this one (:mod:`crystalseg.segment.run`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterable, Iterator
from types import TracebackType
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def prefetch(items: Iterable[T], depth: int = 2) -> Generator[T, None, None]:
    """The items of ``items``, in order, produced up to ``depth`` ahead in a thread.

    An exception of the producer reaches the consumer at the item where it happened.
    A consumer that stops early (``break``, an exception, closing the generator)
    stops the producer too: once the generator is closed, the thread has finished
    the item it was producing and ended, so no read runs behind the caller's back.

    Parameters
    ----------
    items : iterable
        Produced in the thread; each item costs memory while it waits in the queue.
    depth : int
        Items produced ahead, at least 1.
    """
    q: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(entry: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        source = iter(items)
        try:
            while not stop.is_set():  # no item is started once the consumer has stopped
                try:
                    item = next(source)
                except StopIteration:
                    put(("done", None))
                    return
                if not put(("item", item)):
                    return
        except BaseException as exc:  # handed to the consumer
            put(("error", exc))

    thread = threading.Thread(target=produce, name="crystalseg-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        thread.join()


class ChunkPrefetcher:
    """Iterate ``(start, stop, frames)`` while a thread reads the next chunks ahead.

    :func:`prefetch` over ``read(start, stop)`` for each chunk, as a context manager:
    leaving the ``with`` block stops the reading.

    Parameters
    ----------
    read : callable (start, stop) -> ndarray
    chunks : (start, stop) pairs in the order to deliver them
    depth : chunks read ahead (each costs one chunk of memory)
    """

    def __init__(
        self,
        read: Callable[[int, int], np.ndarray],
        chunks: Iterable[tuple[int, int]],
        *,
        depth: int = 2,
    ) -> None:
        pairs = list(chunks)
        self._frames = prefetch(((a, b, read(a, b)) for a, b in pairs), depth=depth)

    def __enter__(self) -> ChunkPrefetcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._frames.close()

    def __iter__(self) -> Iterator[tuple[int, int, np.ndarray]]:
        return self._frames
