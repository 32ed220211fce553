"""Time crystalseg.export on a particle table of a chosen length, beside baselines.

A real 4-frame synthetic run is measured (its true mask standing as the
segmentation); its particle table is then repeated to ``--rows`` rows and written
back as the run's ``particles`` group, so that the export reads a table of the
size of a long run. Timed, each in the same process:

* CSV: ``export_particles`` (units in headers, 6 significant digits, 1/0, BOM)
  against pandas ``to_csv`` of the same table at full precision (what the export
  wrote before);
* xlsx: ``export_run(what=("particles",), format="xlsx")`` (XlsxWriter, constant
  memory) against pandas ``to_excel`` with openpyxl, the other maintained writer;
* Parquet: ``export_particles`` against pandas ``to_parquet``.

Prints JSON: seconds, rows per second, file bytes, and each ratio to its baseline;
peak Python memory (tracemalloc) of the xlsx writers when ``--memory``.

    python benchmarks/bench_export.py [--rows 50000] [--memory]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from crystalseg.dims import FRAME_DIMS
from crystalseg.export import ExportSettings, export_particles, export_run
from crystalseg.measure import measure_run
from crystalseg.measure.results import particle_column_attrs
from crystalseg.store import begin_stage, create_array, read_run_attrs, read_table, write_table
from crystalseg.synth import SynthConfig, synthesize_run


def make_run(path: Path, rows: int) -> pd.DataFrame:
    """A measured run whose particle table has ``rows`` rows (the measured one, repeated)."""
    synthesize_run(path, SynthConfig(frames=4, height=256, width=256, seed=3, scenario="crowded"))
    mask = np.asarray(zarr.open_group(str(path), mode="r")["truth/mask"][:])
    arr = create_array(
        path,
        "mask",
        dims=FRAME_DIMS,
        shape=mask.shape,
        dtype="uint8",
        chunks=(2, 256, 256),
        attrs={"codes": ["background", "crystal"]},
    )
    arr[:] = mask
    stage = begin_stage(path, "segment", settings={"truth": True}, n_frames=4, frames_per_chunk=2)
    stage.mark_done(0, 4)
    stage.finish()
    measure_run(path, scheduler="synchronous")
    table = read_table(path, "particles")
    big = table.iloc[np.resize(np.arange(len(table)), rows)].reset_index(drop=True)
    attrs = read_run_attrs(path)
    columns = zarr.open_group(str(path / "particles"), mode="r").attrs.asdict()
    write_table(
        path,
        "particles",
        big,
        attrs={k: v for k, v in columns.items() if k != "columns"},
        column_attrs=particle_column_attrs(attrs.get("pixel_size_um")),
    )
    return big


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def peak_mib(fn: Callable[[], object]) -> float:
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--memory", action="store_true", help="Also peak memory (slower).")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        run = folder / "run.zarr"
        table = make_run(run, args.rows)
        out = folder / "out"
        out.mkdir()
        xlsx = ExportSettings(what=("particles",), format="xlsx")

        cases: dict[str, tuple[Callable[[], object], Path]] = {
            "csv": (lambda: export_particles(run, out / "p.csv"), out / "p.csv"),
            "csv_baseline_pandas_full_precision": (
                lambda: table.to_csv(out / "b.csv", index=False),
                out / "b.csv",
            ),
            "xlsx": (lambda: export_run(run, out, settings=xlsx), out / "run.xlsx"),
            "xlsx_baseline_pandas_openpyxl": (
                lambda: table.to_excel(out / "b.xlsx", index=False, engine="openpyxl"),
                out / "b.xlsx",
            ),
            "parquet": (lambda: export_particles(run, out / "p.parquet"), out / "p.parquet"),
            "parquet_baseline_pandas": (
                lambda: table.to_parquet(out / "b.parquet", index=False),
                out / "b.parquet",
            ),
        }
        result: dict[str, object] = {
            "rows": args.rows,
            "columns": table.shape[1],
            "machine": platform.processor() or platform.machine(),
        }
        seconds = {}
        for name, (fn, path) in cases.items():
            seconds[name] = timed(fn)
            result[name] = {
                "seconds": round(seconds[name], 3),
                "rows_per_s": round(args.rows / seconds[name]),
                "bytes": path.stat().st_size,
            }
        for fmt in ("csv", "xlsx", "parquet"):
            base = next(k for k in seconds if k.startswith(f"{fmt}_baseline"))
            result[f"{fmt}_time_ratio_to_baseline"] = round(seconds[fmt] / seconds[base], 2)
        if args.memory:
            result["xlsx_peak_python_mib"] = round(
                peak_mib(lambda: export_run(run, out, settings=xlsx)), 1
            )
            result["xlsx_baseline_peak_python_mib"] = round(
                peak_mib(lambda: table.to_excel(out / "b.xlsx", index=False, engine="openpyxl")),
                1,
            )
        shutil.rmtree(out)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
