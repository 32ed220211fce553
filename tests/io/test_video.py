"""Video files through PyAV: exact frames (lossless FFV1), timestamps, seeking, colour."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from crystalseg.errors import UnsupportedInputError
from crystalseg.io import VideoSource, open_source, to_grey


def write_video(
    path: Path, frames: np.ndarray, codec: str, pix_fmt: str, fps: int, rgb: bool = False
) -> Path:
    """Encode (t, y, x) grey or (t, y, x, 3) RGB uint8 frames."""
    container = av.open(str(path), "w")
    stream = container.add_stream(codec, rate=fps)
    stream.width, stream.height = frames.shape[2], frames.shape[1]
    stream.pix_fmt = pix_fmt
    for f in frames:
        frame = av.VideoFrame.from_ndarray(f, format="rgb24" if rgb else "gray")
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


@pytest.fixture(scope="module")
def lossless(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (40, 56), dtype=np.uint8)
    frames = np.stack([np.roll(base, 3 * t, axis=1) for t in range(80)])
    path = tmp_path_factory.mktemp("video") / "run.mkv"
    return write_video(path, frames, "ffv1", "gray", fps=5), frames


def test_lossless_video_reads_exactly_with_timestamps_and_seeks(lossless) -> None:
    path, frames = lossless
    with open_source(path) as src:
        assert isinstance(src, VideoSource)
        assert src.shape == (80, 40, 56) and src.dtype == np.uint8
        assert src.time_source == "video timestamps"
        np.testing.assert_allclose(src.time_s, np.arange(80) / 5.0)
        assert src.metadata["codec"] == "ffv1" and src.metadata["frame_rate"] == 5.0
        # forward, on from there, back, and far ahead (a seek): always the right frames
        for start, stop in ((0, 7), (7, 20), (3, 5), (75, 80), (10, 11), (0, 80)):
            np.testing.assert_array_equal(src.read(start, stop), frames[start:stop])


def test_colour_h264_becomes_grey_or_one_channel(tmp_path: Path) -> None:
    """A lossy colour video (H.264 with B-frames, yuv420p): grey by the BT.709 rule
    within the codec's error, ``channel`` keeps one sample; seeking back agrees."""
    t, y, x = np.meshgrid(np.arange(24), np.arange(48), np.arange(64), indexing="ij")
    rgb = np.stack([(4 * x) % 256, (5 * y) % 256, (8 * t + 2 * x) % 256], -1).astype(np.uint8)
    rgb = np.ascontiguousarray(np.repeat(rgb[..., :1], 3, -1) // 2 + rgb // 2)  # soft colour
    path = write_video(tmp_path / "run.mp4", rgb, "libx264", "yuv420p", fps=10, rgb=True)
    with open_source(path) as src:
        assert src.shape == (24, 48, 64)
        np.testing.assert_allclose(src.time_s, np.arange(24) / 10.0)
        grey = src.read(0, 24)
        assert np.abs(grey.astype(int) - to_grey(rgb)).mean() < 3
        np.testing.assert_array_equal(src.read(13, 16), grey[13:16])
    with VideoSource(path, channel=1) as green:
        assert np.abs(green.read(0, 24).astype(int) - rgb[..., 1]).mean() < 4


def test_not_a_video_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is no video")
    with pytest.raises(UnsupportedInputError, match="not a video FFmpeg can open"):
        open_source(bad)


def test_import_a_video_into_a_run(tmp_path: Path, lossless) -> None:
    from click.testing import CliRunner

    from crystalseg.cli import cli
    from crystalseg.store import open_run

    path, frames = lossless
    run = tmp_path / "run.zarr"
    result = CliRunner().invoke(cli, ["-q", "import", str(path), str(run), "--pixel-size", "2"])
    assert result.exit_code == 0, result.output
    ds = open_run(run)
    np.testing.assert_array_equal(ds["image"].values, frames)
    np.testing.assert_allclose(ds["time"].values, np.arange(80) / 5.0)
