"""Reading a probe's chord counts from its CSV export (crystalseg.kinetics.fbrm)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from crystalseg.errors import InputNotFoundError, UnsupportedInputError
from crystalseg.kinetics.cld import CLD_CLASS_NAMES
from crystalseg.kinetics.fbrm import bin_of_header, read_fbrm_csv

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fbrm_example.csv"


@pytest.mark.parametrize(
    ("header", "edges"),
    [
        ("10-50 um", (10.0, 50.0)),
        ("10 - 50 µm", (10.0, 50.0)),
        ("Counts 50-150 microns", (50.0, 150.0)),
        ("#/s (150-300)", (150.0, 300.0)),
        ("<10", (0.0, 10.0)),
        ("< 10 um", (0.0, 10.0)),
        (">1000", (1000.0, math.inf)),
        ("1000+ µm", (1000.0, math.inf)),
        ("2,5-5 um", (2.5, 5.0)),
        ("Mean (No Wt)", None),
        ("Time (s)", None),
    ],
)
def test_bin_of_header(header: str, edges: tuple[float, float] | None) -> None:
    assert bin_of_header(header) == edges


def test_class_counts_sum_bins_and_split_a_straddling_bin(tmp_path: Path) -> None:
    path = tmp_path / "probe.csv"
    path.write_text(
        "Time (min),<10 um,10-50 um,50-150 um,150-450 um,>1000,Median No Wt\n"
        "0,1,2,3,4,5,33.1\n"
        "0.5,10,20,30,40,50,34.0\n"
    )
    fbrm = read_fbrm_csv(path)
    np.testing.assert_allclose(fbrm.time_s, [0.0, 30.0])
    assert fbrm.ignored == ("Median No Wt",)
    classes = fbrm.class_counts()
    assert list(classes.columns) == list(CLD_CLASS_NAMES)
    # 150-450 straddles 300: log(300/150)/log(450/150) = 0.631 of it below 300
    share = math.log(2) / math.log(3)
    np.testing.assert_allclose(
        classes.iloc[1].to_numpy(), [10, 20, 30, 40 * share, 40 * (1 - share)]
    )
    # the open bin above 1000 lies outside every class: its counts are not in them
    assert classes.iloc[1].sum() == pytest.approx(100.0)


def test_time_as_timestamps_durations_and_semicolons(tmp_path: Path) -> None:
    stamps = tmp_path / "stamps.csv"
    stamps.write_text(
        "Date Time,10-50 um\n2026-03-14 09:00:00,1\n2026-03-14 09:00:20,2\n2026-03-14 09:01:00,3\n"
    )
    fbrm = read_fbrm_csv(stamps)
    np.testing.assert_allclose(fbrm.time_s, [0, 20, 60])
    assert str(fbrm.start) == "2026-03-14 09:00:00"
    clock = tmp_path / "clock.csv"
    clock.write_text("Relative Time;<10 um;10-50 um\n00:00:00;1,5;2\n00:01:30;2,5;3\n")
    fbrm = read_fbrm_csv(clock)
    np.testing.assert_allclose(fbrm.time_s, [0, 90])
    np.testing.assert_allclose(fbrm.counts[:, 0], [1.5, 2.5])  # decimal comma
    bare = tmp_path / "bare.csv"
    bare.write_text("Time,10-50 um\n0,1\n2,2\n")
    with pytest.raises(UnsupportedInputError, match="holds numbers with no unit"):
        read_fbrm_csv(bare)
    np.testing.assert_allclose(read_fbrm_csv(bare, time_unit="h").time_s, [0, 7200])


def test_files_that_cannot_be_read_say_why(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="does not exist"):
        read_fbrm_csv(tmp_path / "missing.csv")
    none = tmp_path / "none.csv"
    none.write_text("Time (s),Mean,Median\n0,1,2\n")
    with pytest.raises(UnsupportedInputError, match="no column that names a chord bin"):
        read_fbrm_csv(none)
    back = tmp_path / "back.csv"
    back.write_text("Time (s),<10\n0,1\n10,1\n5,1\n")
    with pytest.raises(UnsupportedInputError, match="do not increase"):
        read_fbrm_csv(back)


def test_the_example_file_reads() -> None:
    fbrm = read_fbrm_csv(EXAMPLE)
    assert fbrm.columns[0].startswith("<10")
    assert fbrm.start is not None
    assert len(fbrm.time_s) > 10 and np.all(np.diff(fbrm.time_s) > 0)
    assert np.isfinite(fbrm.counts).all() and fbrm.counts.sum() > 0
