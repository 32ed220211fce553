"""Measure a run on a dask.distributed cluster, with its store on object storage or disk.

    python examples/dask_cluster.py RUN [--scheduler ADDRESS] [--workers N]

RUN is a run store that every worker can reach: a URL (``s3://bucket/run.zarr``;
credentials and endpoint from the usual AWS environment variables or profile) or a
folder on a file system all workers mount. With ``--scheduler`` the chunks run on that
cluster (a managed one hands you its address, e.g. ``tls://scheduler:8786``); without
it, on a ``LocalCluster`` of ``--workers`` processes started here, which is what the
test suite runs (``tests/store/test_cluster.py``).

The run is segmented first when it has no mask (the model is loaded once per worker),
then measured; a run that was interrupted resumes where it stopped. Prints the PSD's
D50 over time.
"""

from __future__ import annotations

import argparse
from contextlib import ExitStack

from crystalseg.pipeline import segment_and_measure


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run store: a local path or s3://bucket/run.zarr")
    parser.add_argument("--scheduler", help="address of a running dask scheduler")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes")
    args = parser.parse_args(argv)
    with ExitStack() as stack:
        address = args.scheduler
        if address is None:
            from distributed import LocalCluster

            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=args.workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                )
            )
            address = cluster.scheduler_address
        psd = segment_and_measure(args.run, client=address)
        d50 = psd["d50_number"].values if "d50_number" in psd else None
    print(f"measured {psd.sizes['time']} frames of {args.run}")
    if d50 is not None:
        print("D50 (number) per frame:", " ".join(f"{v:.3g}" for v in d50))


if __name__ == "__main__":
    main()
