"""int8 on the CPU: quantized once, used only where its masks agree with fp32, recorded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crystalseg.errors import ConfigError
from crystalseg.models import ModelSpec
from crystalseg.segment import EngineSettings, Segmenter, segment_run
from crystalseg.segment import int8 as q
from crystalseg.segment.engine import resolve_precision
from crystalseg.segment.onnx_backend import model_fingerprint, read_choices
from crystalseg.store import describe_run, stage_info
from crystalseg.summary import format_run_info

pytest.importorskip("onnxruntime")

#: The spec of the models below (normalisation and stride; the network is a Pointwise).
SPEC = ModelSpec(encoder="mobilenet_v2", codes=("background", "crystal"))

#: A 1x1 convolution whose decision (crystal where the normalised intensity exceeds
#: -1/16) lies where int8 rounding never moves it: masks agree exactly.
AGREEING = ((-8.0, 8.0), 0.5)
#: The same with its decision at the normalised intensity 1.5, inside the dense bright
#: background of the calibration frames: about a fifth of the mask flips in int8.
DISAGREEING = ((8.0, -8.0), 12.0)


def _engine(pointwise, weights, *, precision="auto", min_iou=0.995):
    w, b = weights
    settings = EngineSettings(
        device="cpu", backend="onnx", threads=1, precision=precision, int8_min_iou=min_iou
    )
    return Segmenter(pointwise(w, b), SPEC, settings=settings)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return np.count_nonzero((a > 0) & (b > 0)) / max(1, np.count_nonzero((a > 0) | (b > 0)))


def test_int8_engine_agrees_with_fp32(pointwise, frames_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("CRYSTALSEG_CACHE_DIR", str(tmp_path / "cache"))
    int8 = _engine(pointwise, AGREEING, precision="int8")
    fp32 = _engine(pointwise, AGREEING, precision="fp32")
    assert (int8.precision, int8.backend, int8.settings.precision) == ("int8", "onnx", "int8")
    assert fp32.precision == "fp32" and fp32.describe()["precision_choice"]["reason"].startswith(
        "fp32: asked"
    )
    choice = int8.describe()["precision_choice"]
    assert choice["precision"] == "int8" and choice["requested"] == "int8"
    assert choice["agreement_iou"] >= 0.995 and choice["calibration"] == q.CALIBRATION_RECIPE
    # the quantized model is cached under the weights' checksum and the calibration recipe
    checksum = model_fingerprint(pointwise(*AGREEING))
    cached = tmp_path / "cache" / "onnx" / f"model-{checksum[:16]}-int8-{q.CALIBRATION_RECIPE}.onnx"
    assert choice["int8_model"] == cached.name and cached.is_file()
    # frames it was not calibrated on, of sizes that need padding
    frames = frames_factory(3, 150, 100, seed=11)
    m8, p8 = int8.predict(frames, probability=True)
    m32, p32 = fp32.predict(frames, probability=True)
    assert 0.05 < (m32 > 0).mean() < 0.95
    assert _iou(m8, m32) >= 0.995
    # the probability is quantised to 1/255 anyway; int8 moves it by a few levels at most
    assert np.abs(p8.astype(int) - p32.astype(int)).max() <= 12
    # the measurement is remembered with the int8 file's checksum: not repeated
    records = [v for k, v in read_choices().items() if k.endswith(f"int8={q.CALIBRATION_RECIPE}")]
    assert len(records) == 1 and records[0]["agreement_iou"] == choice["agreement_iou"]
    stamp = cached.stat().st_mtime_ns
    q.forget_precision_choices()
    again = _engine(pointwise, AGREEING, precision="int8")
    assert again.precision_choice.agreement_iou == choice["agreement_iou"]
    assert cached.stat().st_mtime_ns == stamp


def test_disagreeing_int8_falls_back_to_fp32(pointwise, tmp_path, monkeypatch):
    monkeypatch.setenv("CRYSTALSEG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(q, "cpu_has_vnni", lambda: True)  # the choice is made on any CPU
    auto = _engine(pointwise, DISAGREEING)
    choice = auto.precision_choice
    assert auto.precision == "fp32" and auto.settings.precision == "fp32"
    assert 0.5 < choice.agreement_iou < 0.995
    assert "agree" in choice.reason and choice.int8_model is not None
    # forcing int8 runs it, with a warning that says how far its masks are from fp32 ...
    with pytest.warns(UserWarning, match=r"agree with float32 only at foreground IoU 0\.\d+"):
        forced = _engine(pointwise, DISAGREEING, precision="int8")
    assert forced.precision == "int8"
    assert forced.describe()["precision_choice"]["agreement_iou"] == choice.agreement_iou
    # ... against the caller's threshold: a looser one accepts these masks silently
    loose = _engine(pointwise, DISAGREEING, precision="int8", min_iou=0.5)
    assert loose.precision == "int8"
    # and a threshold stricter than the agreement reached refuses int8 in auto
    strict = _engine(pointwise, DISAGREEING, min_iou=choice.agreement_iou + 1e-3)
    assert strict.precision == "fp32" and "agree" in strict.precision_choice.reason


def test_no_vnni_keeps_fp32_without_quantizing(pointwise, tmp_path, monkeypatch):
    monkeypatch.setenv("CRYSTALSEG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(q, "cpu_has_vnni", lambda: False)
    seg = _engine(pointwise, AGREEING)
    assert seg.precision == "fp32" and "no VNNI" in seg.precision_choice.reason
    assert not list((tmp_path / "cache" / "onnx").glob("*int8*"))


def test_int8_precision_recorded_in_provenance(pointwise, frames_factory, run_factory, tmp_path):
    frames = frames_factory(4, 64, 64, seed=5)
    run = run_factory(tmp_path / "run.zarr", frames, frames_per_chunk=2)
    seg = _engine(pointwise, AGREEING, precision="int8")
    mask = segment_run(run, seg)
    engine = stage_info(run)["segment"]["engine"]
    assert engine["precision"] == "int8" and engine["backend"] == "onnx"
    assert engine["precision_choice"]["agreement_iou"] >= 0.995
    assert "int8)" in format_run_info(describe_run(run))  # crystalseg info says it
    assert _iou(mask.values, _engine(pointwise, AGREEING, precision="fp32").predict(frames)) > 0.99


def test_int8_is_for_the_cpu_and_onnx_runtime():
    with pytest.raises(ConfigError, match="CPU only"):
        resolve_precision("int8", torch.device("cuda"))
    with pytest.raises(ConfigError, match="ONNX Runtime"):
        EngineSettings(precision="int8", backend="torch")


def test_foreground_iou_of_logits():
    a = np.zeros((1, 3, 2, 2), np.float32)
    b = a.copy()
    a[0, 1, 0, :] = 1  # two foreground pixels
    b[0, 2, 0, 0] = 1  # one of them, as another foreground class
    assert q.foreground_iou(a, b) == 0.5
    assert q.foreground_iou(np.zeros_like(a), np.zeros_like(b)) == 1.0
