"""Chunks of a stage on a dask.distributed cluster: one way for every stage.

A stage hands its pending chunks to :func:`run_on_cluster` with the function
that does one chunk (it writes its chunk into the store, which every worker
must see, and marks it done) and gets each chunk back as it completes. Keys
carry a random tag, so a run re-submitted after an interruption never meets
the results of the old one on a long-lived scheduler; an error or an early
stop (the caller stops iterating) cancels what is still queued. A scheduler
address (``"tcp://host:8786"``) opens a client for the call and closes it after.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Generator, Sequence
from typing import Any, TypeVar

Job = TypeVar("Job")


def cluster_client(client: Any) -> tuple[Any, bool]:
    """The client to use and whether this call opened it (from an address)."""
    if isinstance(client, str):
        from distributed import Client

        return Client(client), True
    return client, False


def run_on_cluster(
    client: Any,
    function: Callable[..., int],
    jobs: Sequence[tuple[Job, tuple[Any, ...]]],
    *,
    name: str,
) -> Generator[tuple[Job, int], None, None]:
    """Run ``function(*args)`` for every ``(job, args)`` on the cluster's workers.

    Parameters
    ----------
    client : distributed.Client or scheduler address
    function : the work of one chunk; returns the number of frames it did
    jobs : (job, args) per chunk; ``job`` is handed back with the result
    name : stage name, the prefix of the task keys (``crystalseg-<name>-<tag>-<i>``)

    Yields
    ------
    (job, frames) as each chunk completes, in completion order.
    """
    client, own = cluster_client(client)
    tag = uuid.uuid4().hex[:8]
    try:
        futures = {
            client.submit(function, *args, key=f"crystalseg-{name}-{tag}-{i}", pure=False): job
            for i, (job, args) in enumerate(jobs)
        }
        if not futures:
            return
        from distributed import as_completed

        try:
            for future in as_completed(futures):
                yield futures[future], future.result()
        except BaseException:  # also GeneratorExit: the caller stopped iterating
            client.cancel(list(futures))
            raise
    finally:
        if own:
            client.close()


__all__ = ["cluster_client", "run_on_cluster"]
