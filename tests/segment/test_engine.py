"""The inference engine: padding, tiling and blending, normalisation, batching, devices."""

from __future__ import annotations

import itertools
import pickle
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from crystalseg.errors import ConfigError
from crystalseg.models import ModelSpec, build_model
from crystalseg.segment import EngineSettings, Segmenter, load_segmenter, select_device
from crystalseg.segment.engine import (
    MAX_GPU_BATCH,
    GpuMemoryError,
    blend_window,
    class_map,
    pad_to_multiple,
    resolve_precision,
    tile_starts,
)

CPU_TORCH = EngineSettings(device="cpu", backend="torch", threads=1)


def _spec() -> ModelSpec:
    return ModelSpec(
        encoder="mobilenet_v2", codes=("background", "crystal"), decoder_channels=(16,) * 5
    )


# ---------------------------------------------------------------------------- padding


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 70), w=st.integers(1, 70), multiple=st.sampled_from([8, 32]))
def test_pad_matches_numpy_reflect(h: int, w: int, multiple: int) -> None:
    x = torch.arange(h * w, dtype=torch.float32).reshape(1, 1, h, w)
    got = pad_to_multiple(x, multiple)
    ph, pw = (-h) % multiple, (-w) % multiple
    want = np.pad(x.numpy(), ((0, 0), (0, 0), (0, ph), (0, pw)), mode="reflect")
    assert got.shape[-2] % multiple == 0 and got.shape[-1] % multiple == 0
    np.testing.assert_array_equal(got.numpy(), want)


# ----------------------------------------------------------------------------- tiling


@settings(max_examples=200, deadline=None)
@given(
    size=st.integers(1, 5000),
    tile=st.sampled_from([64, 96, 256, 1024]),
    frac=st.floats(0, 0.5),
)
def test_tiles_cover_with_overlap(size: int, tile: int, frac: float) -> None:
    overlap = int(tile * frac)
    starts = tile_starts(size, tile, overlap)
    if size <= tile:
        assert starts == [0]
        return
    assert starts[0] == 0 and starts[-1] == size - tile
    assert all(b > a for a, b in itertools.pairwise(starts))
    # neighbours overlap by at least `overlap` pixels, so every pixel is covered
    assert all(a + tile - b >= overlap for a, b in itertools.pairwise(starts))


def test_blend_window_shape() -> None:
    w = blend_window(64, 16, ramp_start=True, ramp_end=True)
    assert w.shape == (64,)
    assert torch.all(w > 0) and torch.all(w <= 1)
    assert torch.all(w[16:48] == 1)
    torch.testing.assert_close(w, w.flip(0))
    # the ramps of two neighbours sum to one over the overlap (raised cosine)
    rise = blend_window(64, 16, ramp_start=True, ramp_end=False)[:16]
    fall = blend_window(64, 16, ramp_start=False, ramp_end=True)[-16:]
    torch.testing.assert_close(rise + fall, torch.ones(16))
    flat = blend_window(64, 16, ramp_start=False, ramp_end=False)
    assert torch.all(flat == 1)


def test_tiled_equals_whole_for_pointwise_model(pointwise, frames_factory) -> None:
    """A 1x1 model has no context: tiling and blending must reproduce it exactly."""
    spec = _spec()
    frames = frames_factory(2, 150, 211, seed=3)
    whole = Segmenter(pointwise(), spec, settings=CPU_TORCH)
    tiled = Segmenter(
        pointwise(),
        spec,
        settings=EngineSettings(
            device="cpu", backend="torch", tile_size=64, tile_overlap=16, threads=1
        ),
    )
    a, b = whole.predict_logits(frames), tiled.predict_logits(frames)
    assert a.shape == (2, 2, 150, 211)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(whole.predict(frames), tiled.predict(frames))


def test_tiled_close_to_whole_for_unet(checkpoint, frames_factory) -> None:
    """A U-Net sees context; blended tiles with overlap stay close to the whole frame."""
    frames = frames_factory(2, 200, 260, seed=1)
    whole = Segmenter.from_checkpoint(checkpoint, settings=CPU_TORCH)
    tiled = Segmenter.from_checkpoint(
        checkpoint,
        settings=EngineSettings(
            device="cpu", backend="torch", tile_size=128, tile_overlap=64, threads=1
        ),
    )
    a, b = whole.predict_logits(frames), tiled.predict_logits(frames)
    da, db = a[:, 1] - a[:, 0], b[:, 1] - b[:, 0]
    assert np.abs(da - db).max() < 0.25 * da.std()
    assert np.corrcoef(da.ravel(), db.ravel())[0, 1] > 0.999
    agree = (whole.predict(frames) == tiled.predict(frames)).mean()
    assert agree > 0.995


def test_resize_runs_the_model_on_the_resized_frame(pointwise, frames_factory) -> None:
    """resize=0.5 on a frame of 2x2 blocks runs the model on the original frame (area
    averaging undoes the blocks) and brings the logits back bilinearly; a resize up
    and an odd size keep the frame's shape."""
    spec = _spec()
    small = frames_factory(2, 40, 56, seed=4)
    big = np.kron(small, np.ones((1, 2, 2), small.dtype))
    plain = Segmenter(pointwise(), spec, settings=CPU_TORCH)
    half = Segmenter(pointwise(), spec, settings=replace(CPU_TORCH, resize=0.5))
    want = torch.nn.functional.interpolate(
        torch.from_numpy(plain.predict_logits(small)), size=big.shape[1:], mode="bilinear"
    )
    np.testing.assert_allclose(half.predict_logits(big), want.numpy(), rtol=1e-5, atol=1e-5)
    mask, prob = half.predict(big, probability=True)
    assert mask.shape == prob.shape == big.shape
    up = Segmenter(pointwise(), spec, settings=replace(CPU_TORCH, resize=1.5))
    odd = frames_factory(1, 37, 51, seed=5)
    assert up.predict(odd).shape == odd.shape and half.predict(odd).shape == odd.shape
    assert half.describe()["resize"] == 0.5


@pytest.mark.parametrize("k", [2, 3, 5])
def test_class_map_equals_argmax_and_softmax(k) -> None:
    gen = torch.Generator().manual_seed(k)
    logits = torch.randn(3, k, 17, 23, generator=gen) * 3
    logits[0, :, 0, :5] = 1.5  # ties go to the lower class, as with argmax
    mask = torch.empty(3, 17, 23, dtype=torch.uint8)
    prob = torch.empty_like(mask)
    class_map(logits, mask, prob)
    torch.testing.assert_close(mask, logits.argmax(1).to(torch.uint8), rtol=0, atol=0)
    want = ((1 - torch.softmax(logits.double(), 1)[:, 0]) * 255).round()
    assert (prob.double() - want).abs().max() <= 1


# ------------------------------------------------------- normalisation, sizes, dtypes


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (33, 65), (97, 31), (64, 64)])
@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_pointwise_mask_is_analytic(pointwise, shape, dtype) -> None:
    """Normalisation as in training: x/top, (x - mean)/std, then w*x + b; any size."""
    spec = _spec()
    top = 255 if dtype == "uint8" else 65535
    rng = np.random.default_rng(sum(shape))
    frames = rng.integers(0, top + 1, (3, *shape)).astype(dtype)
    seg = Segmenter(pointwise(), spec, settings=CPU_TORCH)
    mask, prob = seg.predict(frames, probability=True)
    assert mask.shape == frames.shape and mask.dtype == np.uint8 and prob.dtype == np.uint8
    x = (frames.astype(np.float64) / top - spec.mean[0]) / spec.std[0]
    diff = (8.0 * x - 0.5) - (-8.0 * x + 0.5)  # logit(crystal) - logit(background)
    decisive = np.abs(diff) > 1e-4
    np.testing.assert_array_equal(mask[decisive], (diff > 0)[decisive])
    want = np.round(255.0 / (1.0 + np.exp(-diff)))
    assert np.abs(prob.astype(float) - want).max() <= 1


def test_uint16_equals_uint8_scaled(checkpoint, frames_factory) -> None:
    """v*257 in uint16 is the same intensity as v in uint8 under dtype scaling."""
    frames = frames_factory(2, 64, 96, seed=2)
    seg = Segmenter.from_checkpoint(checkpoint, settings=CPU_TORCH)
    a = seg.predict_logits(frames)
    b = seg.predict_logits(frames.astype(np.uint16) * 257)
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)
    assert (seg.predict(frames) == seg.predict(frames.astype(np.uint16) * 257)).mean() > 0.999


def test_odd_sizes_keep_shape_and_match_crop(checkpoint, frames_factory) -> None:
    """An odd-sized frame is padded and cropped back: output shape equals input shape."""
    seg = Segmenter.from_checkpoint(checkpoint, settings=CPU_TORCH)
    for h, w in [(37, 53), (64, 65), (127, 1)]:
        frames = frames_factory(2, h, w, seed=h)
        mask = seg.predict(frames)
        assert mask.shape == (2, h, w)
        assert set(np.unique(mask)) <= {0, 1}


def test_probability_agrees_with_mask(checkpoint, frames_factory) -> None:
    frames = frames_factory(2, 64, 64, seed=5)
    seg = Segmenter.from_checkpoint(checkpoint, settings=CPU_TORCH)
    mask, prob = seg.predict(frames, probability=True)
    sure = (prob < 127) | (prob > 128)
    np.testing.assert_array_equal(mask[sure], (prob > 128)[sure])
    assert 0 < mask.mean() < 1  # the test model is not constant


# ------------------------------------------------------------------- batching, OOM


def test_batch_size_does_not_change_result(checkpoint, frames_factory) -> None:
    frames = frames_factory(5, 64, 96, seed=7)
    one = Segmenter.from_checkpoint(
        checkpoint, settings=EngineSettings(device="cpu", backend="torch", batch_size=1, threads=1)
    )
    many = Segmenter.from_checkpoint(
        checkpoint, settings=EngineSettings(device="cpu", backend="torch", batch_size=4, threads=1)
    )
    np.testing.assert_allclose(
        one.predict_logits(frames), many.predict_logits(frames), atol=1e-4, rtol=1e-4
    )


def test_out_of_memory_halves_the_batch(pointwise, frames_factory, monkeypatch) -> None:
    spec = _spec()
    frames = frames_factory(8, 32, 32, seed=1)
    seg = Segmenter(
        pointwise(),
        spec,
        settings=EngineSettings(device="cpu", backend="torch", batch_size=8, threads=1),
    )
    want = seg.predict(frames)
    real = seg._forward
    sizes = []

    def forward(x: torch.Tensor) -> torch.Tensor:
        sizes.append(x.shape[0])
        if x.shape[0] > 2:
            raise torch.OutOfMemoryError("simulated")
        return real(x)

    monkeypatch.setattr(seg, "_forward", forward)
    np.testing.assert_array_equal(seg.predict(frames), want)
    assert sizes[:3] == [8, 4, 2] and set(sizes[2:]) == {2}
    assert seg._batch_cache[(32, 32)] == 2

    def never(x: torch.Tensor) -> torch.Tensor:
        raise torch.OutOfMemoryError("simulated")

    monkeypatch.setattr(seg, "_forward", never)
    with pytest.raises(GpuMemoryError, match="tile-size"):
        seg.predict(frames)


def test_cpu_batch_from_pixel_budget(pointwise) -> None:
    seg = Segmenter(pointwise(), _spec(), settings=CPU_TORCH)
    assert seg._batch_size(512, 512) == 4
    assert seg._batch_size(1024, 1024) == 1
    assert seg._batch_size(64, 64) == 16


# ---------------------------------------------------------------- devices, settings


def test_device_choice_and_errors() -> None:
    if not torch.cuda.is_available():
        expected = "mps" if torch.backends.mps.is_available() else "cpu"
        assert select_device("auto").type == expected
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            select_device("cuda")
    assert select_device("cpu").type == "cpu"
    with pytest.raises(ConfigError, match="device 'gpu'"):
        EngineSettings(device="gpu")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tile_size": 100}, "multiple of 32"),
        ({"tile_size": 128, "tile_overlap": 65}, "tile_overlap"),
        ({"batch_size": 0}, "batch_size"),
        ({"backend": "tensorrt"}, "backend"),
        ({"precision": "int4"}, "precision"),
        ({"int8_min_iou": 1.5}, "int8_min_iou"),
        ({"precision": "int8", "backend": "torch"}, "ONNX Runtime"),
        ({"resize": 0.0}, "resize"),
        ({"resize": 5.0}, "resize"),
        ({"resize": True}, "resize"),
    ],
)
def test_settings_validate(kwargs, message) -> None:
    with pytest.raises(ConfigError, match=message):
        EngineSettings(**kwargs)


def test_never_half_precision_on_cpu() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32"
    with pytest.raises(ConfigError, match="200x slower"):
        resolve_precision("bf16", cpu)
    with pytest.raises(ConfigError, match="bf16"):
        Segmenter(
            build_model(_spec()),
            _spec(),
            settings=EngineSettings(device="cpu", precision="bf16", threads=1),
        )


def test_pickles_as_checkpoint_reference(checkpoint, pointwise) -> None:
    seg = load_segmenter(checkpoint, None, CPU_TORCH)
    again = pickle.loads(pickle.dumps(seg))
    assert again is seg  # same process: the cached engine, not a second model
    with pytest.raises(TypeError, match="save_checkpoint"):
        pickle.dumps(Segmenter(pointwise(), _spec(), settings=CPU_TORCH))


def test_rejects_bad_frames(pointwise) -> None:
    seg = Segmenter(pointwise(), _spec(), settings=CPU_TORCH)
    with pytest.raises(ConfigError, match="expected"):
        seg.predict(np.zeros((2, 3, 4, 5), np.uint8))
    with pytest.raises(ConfigError, match="no pixels"):
        seg.predict(np.zeros((0, 8, 8), np.uint8))


# --------------------------------------------------------------------------- CUDA


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_cuda_path_matches_cpu(checkpoint, frames_factory, dtype) -> None:
    """bf16/fp16 + channels-last + pinned uploads agree with the CPU fp32 reference."""
    frames = frames_factory(6, 200, 300, seed=4, dtype=dtype)
    ref = Segmenter.from_checkpoint(checkpoint, settings=CPU_TORCH).predict(frames)
    fast = Segmenter.from_checkpoint(checkpoint, settings=EngineSettings(device="cuda"))
    assert fast.precision in ("bf16", "fp16")
    mask, prob = fast.predict(frames, probability=True)
    assert mask.dtype == np.uint8 and prob.dtype == np.uint8 and mask.shape == frames.shape
    assert (mask == ref).mean() > 0.99
    exact = Segmenter.from_checkpoint(
        checkpoint, settings=EngineSettings(device="cuda", precision="fp32")
    )
    assert (exact.predict(frames) == ref).mean() > 0.999
    tiled = Segmenter.from_checkpoint(
        checkpoint, settings=EngineSettings(device="cuda", tile_size=128, tile_overlap=64)
    )
    assert (tiled.predict(frames) == mask).mean() > 0.99
    assert 1 <= fast._batch_cache[(224, 320)] <= MAX_GPU_BATCH


@pytest.mark.parametrize("transform", ["flip_x", "flip_y", "rot90", "transpose"])
def test_tta_is_equivariant_to_flips_and_turns(checkpoint, frames_factory, transform) -> None:
    """Averaging over the 8 flips/turns makes the prediction of a turned frame the turned
    prediction (up to float rounding), which the plain model does not guarantee."""
    move = {
        "flip_x": lambda a: a[..., ::-1],
        "flip_y": lambda a: a[..., ::-1, :],
        "rot90": lambda a: np.rot90(a, 1, axes=(-2, -1)),
        "transpose": lambda a: np.swapaxes(a, -1, -2),
    }[transform]
    frames = frames_factory(2, 96, 160, seed=5)
    tta = Segmenter.from_checkpoint(checkpoint, settings=replace(CPU_TORCH, tta=True))
    _, prob = tta.predict(frames, probability=True)
    _, prob_moved = tta.predict(np.ascontiguousarray(move(frames)), probability=True)
    diff = np.abs(prob_moved.astype(int) - move(prob).astype(int))
    assert diff.max() <= 1  # uint8 probability: one level of rounding at most
    plain = Segmenter.from_checkpoint(checkpoint, settings=CPU_TORCH)
    _, p0 = plain.predict(frames, probability=True)
    _, p1 = plain.predict(np.ascontiguousarray(move(frames)), probability=True)
    assert np.abs(p1.astype(int) - move(p0).astype(int)).max() > 1  # a real difference


def test_tta_agrees_with_the_mean_of_transformed_predictions(checkpoint, frames_factory) -> None:
    """The TTA probability is the mean of the plain model's probabilities over the 8 views."""
    frames = frames_factory(1, 64, 64, seed=6)
    plain = Segmenter.from_checkpoint(checkpoint, settings=CPU_TORCH)
    views = []
    for k in range(4):
        for flip in (False, True):
            f = np.rot90(frames, k, axes=(1, 2))
            f = f[..., ::-1] if flip else f
            _, p = plain.predict(np.ascontiguousarray(f), probability=True)
            p = p[..., ::-1] if flip else p
            views.append(np.rot90(p, -k, axes=(1, 2)).astype(float))
    tta = Segmenter.from_checkpoint(checkpoint, settings=replace(CPU_TORCH, tta=True))
    _, prob = tta.predict(frames, probability=True)
    # the engine averages class probabilities before the foreground probability is taken;
    # with two classes both are the same mean, up to uint8 rounding of each view
    assert np.abs(prob - np.mean(views, axis=0)).max() <= 1.0
