"""import_run: every format round-trips into the store; interruption and failure are safe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from crystalseg.errors import RunFormatError, UnsupportedInputError
from crystalseg.importing import import_run
from crystalseg.store import describe_run, open_run, stage_info


def _frames(rng: np.random.Generator, n: int = 6, dtype=np.uint8) -> np.ndarray:
    return rng.integers(0, np.iinfo(dtype).max, (n, 20, 24), dtype=dtype)


def _ome_tiff(path: Path, data: np.ndarray) -> tuple[float, np.ndarray]:
    tifffile.imwrite(
        path,
        data,
        ome=True,
        metadata={
            "axes": "TYX",
            "PhysicalSizeX": 0.65,
            "PhysicalSizeXUnit": "µm",
            "PhysicalSizeY": 0.65,
            "PhysicalSizeYUnit": "µm",
            "Plane": {"DeltaT": [1.5 * i for i in range(len(data))]},
        },
    )
    return 0.65, np.arange(len(data)) * 1.5


def _ome_zarr(path: Path, data: np.ndarray) -> tuple[float, np.ndarray]:
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    group.create_array("0", data=data, chunks=(2, 20, 24))
    group.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {
                "axes": [
                    {"name": "t", "type": "time", "unit": "second"},
                    {"name": "y", "type": "space", "unit": "micrometer"},
                    {"name": "x", "type": "space", "unit": "micrometer"},
                ],
                "datasets": [
                    {
                        "path": "0",
                        "coordinateTransformations": [
                            {"type": "scale", "scale": [4.0, 0.25, 0.25]}
                        ],
                    }
                ],
            }
        ],
    }
    return 0.25, np.arange(len(data)) * 4.0


def _plain_zarr(path: Path, data: np.ndarray) -> tuple[None, None]:
    zarr.create_array(str(path), data=data, chunks=(4, 20, 24))
    return None, None


def _npy(path: Path, data: np.ndarray) -> tuple[None, None]:
    np.save(path, data)
    return None, None


def _folder(path: Path, data: np.ndarray) -> tuple[None, None]:
    path.mkdir()
    for i, frame in enumerate(data):
        Image.fromarray(frame).save(path / f"f{i}.png")
    return None, None


@pytest.mark.parametrize(
    ("writer", "name", "dtype"),
    [
        (_ome_tiff, "s.ome.tif", np.uint16),
        (_ome_zarr, "s.ome.zarr", np.uint8),
        (_plain_zarr, "a.zarr", np.uint16),
        (_npy, "s.npy", np.uint8),
        (_folder, "frames", np.uint8),
    ],
)
def test_each_format_round_trips(tmp_path: Path, rng, writer, name, dtype) -> None:
    data = _frames(rng, dtype=dtype)
    pixel, times = writer(tmp_path / name, data)
    import_run(
        tmp_path / name,
        tmp_path / "run.zarr",
        interval_s=None if times is not None else 2.0,
        frames_per_chunk=4,
    )
    ds = open_run(tmp_path / "run.zarr")
    assert ds["image"].dtype == dtype
    np.testing.assert_array_equal(ds["image"].values, data)
    expected_t = times if times is not None else np.arange(len(data)) * 2.0
    np.testing.assert_allclose(ds["time"].values, expected_t)
    assert ds.attrs["pixel_size_um"] == (pytest.approx(pixel) if pixel else None)


def test_interrupted_import_is_incomplete_and_resumes(tmp_path: Path, rng) -> None:
    data = _frames(rng, n=10)
    np.save(tmp_path / "s.npy", data)
    calls = []

    def die_after_first_chunk(n: int) -> None:
        calls.append(n)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        import_run(
            tmp_path / "s.npy",
            tmp_path / "r.zarr",
            interval_s=1.0,
            frames_per_chunk=2,
            progress=die_after_first_chunk,
        )
    info = stage_info(tmp_path / "r.zarr")["import"]
    assert info["status"] == "running" and 0 < info["frames_done"] < 10
    with pytest.raises(RunFormatError, match="incomplete"):
        open_run(tmp_path / "r.zarr")
    seen = []
    import_run(
        tmp_path / "s.npy",
        tmp_path / "r.zarr",
        interval_s=1.0,
        frames_per_chunk=2,
        progress=seen.append,
    )
    assert sum(seen) == 10  # frames kept from the first try are counted, not redone
    np.testing.assert_array_equal(open_run(tmp_path / "r.zarr")["image"].values, data)
    assert describe_run(tmp_path / "r.zarr")["stages"]["import"]["status"] == "finished"


def test_failure_mid_stream_leaves_no_new_store(tmp_path: Path, rng) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(_frames(rng, n=1)[0]).save(folder / f"f{i}.png")
    (folder / "f2.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")  # a truncated download
    with pytest.raises(UnsupportedInputError):
        import_run(folder, tmp_path / "r.zarr", interval_s=1.0, frames_per_chunk=1)
    assert not (tmp_path / "r.zarr").exists()


@pytest.mark.parametrize(
    ("found", "match"),
    [
        ([0.0, float("nan"), 2.0], r"not finite and increasing: frame 1 has time nan"),
        ([0.0, 5.0, 3.0], r"frame 2 is at 3 s, not after frame 1 at 5 s"),
        ([0.0, 5.0, 5.0], r"frame 2 is at 5 s, not after frame 1 at 5 s"),
        ([0.0, 1.0], r"holds 2 frame times .* for 3 frames"),
    ],
)
def test_frame_times_from_the_recording_must_be_finite_and_increasing(found, match) -> None:
    from crystalseg.errors import UnsupportedInputError
    from crystalseg.importing import frame_times

    with pytest.raises(UnsupportedInputError, match=match + r".*pass --interval SECONDS"):
        frame_times(3, interval_s=None, found_s=np.array(found), found_from="OME Plane DeltaT")
    times, source = frame_times(3, interval_s=2.5, found_s=np.array(found), found_from="x")
    np.testing.assert_array_equal(times, [0.0, 2.5, 5.0])  # a given interval wins
    assert source == "given interval"


@pytest.mark.parametrize("interval", [0.0, -1.0, 1e-300, float("nan"), float("inf")])
def test_an_interval_outside_physical_limits_is_refused(interval: float) -> None:
    from crystalseg.errors import ConfigError
    from crystalseg.importing import frame_times

    with pytest.raises(ConfigError, match=r"--interval: frame interval .* is outside the physical"):
        frame_times(3, interval_s=interval, found_s=None, found_from="none")


@pytest.mark.parametrize("fpc", [0, -2])
def test_frames_per_chunk_below_one_is_refused_before_a_store_is_made(
    tmp_path: Path, fpc: int
) -> None:
    from crystalseg.errors import ConfigError

    np.save(tmp_path / "s.npy", np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(ConfigError, match=rf"frames_per_chunk must be an integer >= 1, got {fpc}"):
        import_run(tmp_path / "s.npy", tmp_path / "r.zarr", interval_s=1.0, frames_per_chunk=fpc)
    assert not (tmp_path / "r.zarr").exists()
