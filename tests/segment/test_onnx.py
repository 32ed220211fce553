"""The ONNX Runtime CPU backend: export, cache by checksum, parity, automatic choice."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from crystalseg.errors import ConfigError
from crystalseg.models import load_checkpoint
from crystalseg.segment import EngineSettings, Segmenter
from crystalseg.segment import onnx_backend as ob
from crystalseg.segment.engine import checkpoint_checksum

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, checkpoint_factory_module):
    """One fresh checkpoint for this module (its ONNX export is made by the first test)."""
    return checkpoint_factory_module(tmp_path_factory.mktemp("onnx-model"), seed=3)


def _loaded(checkpoint):
    model, spec, meta = load_checkpoint(checkpoint)
    seg = Segmenter(model, spec, settings=EngineSettings(device="cpu", backend="torch", threads=1))
    return model, spec, checkpoint_checksum(meta), seg


def test_export_is_cached_next_to_checkpoint_and_matches_torch(ckpt):
    model, spec, checksum, seg = _loaded(ckpt)
    runner = ob.load_onnx_runner(
        model,
        spec,
        checksum=checksum,
        checkpoint=ckpt,
        threads=1,
        torch_forward=seg._torch_forward,
    )
    path = ckpt / f"model-{checksum[:16]}.onnx"
    assert runner.path == path and path.is_file()
    assert ob.parity_error(runner, seg._torch_forward, spec, seed=5) <= 1.0
    stamp = path.stat().st_mtime_ns
    ob.load_onnx_runner(
        model,
        spec,
        checksum=checksum,
        checkpoint=ckpt,
        threads=1,
        torch_forward=seg._torch_forward,
    )
    assert path.stat().st_mtime_ns == stamp  # reused, not exported again


def test_corrupt_cache_is_exported_again(ckpt):
    model, spec, checksum, seg = _loaded(ckpt)
    path = ob.onnx_cache_path(checksum, ckpt)
    path.write_bytes(b"not an onnx model")
    runner = ob.load_onnx_runner(
        model,
        spec,
        checksum=checksum,
        checkpoint=ckpt,
        threads=1,
        torch_forward=seg._torch_forward,
    )
    assert path.stat().st_size > 1000
    assert ob.parity_error(runner, seg._torch_forward, spec) <= 1.0


def test_disagreeing_export_is_refused(ckpt, monkeypatch):
    model, spec, checksum, seg = _loaded(ckpt)
    monkeypatch.setattr(ob, "parity_error", lambda *a, **k: 7.0)
    with pytest.raises(ob.OnnxUnavailableError, match="backend torch"):
        ob.load_onnx_runner(
            model,
            spec,
            checksum=checksum,
            checkpoint=ckpt,
            threads=1,
            torch_forward=seg._torch_forward,
        )
    # "auto" falls back to PyTorch instead of failing
    auto = Segmenter(
        model,
        spec,
        settings=EngineSettings(device="cpu", threads=1),
        checksum=checksum,
        checkpoint=ckpt,
    )
    assert auto.backend == "torch"


def test_read_only_checkpoint_uses_user_cache(tmp_path, monkeypatch):
    ckpt = tmp_path / "bundled"
    ckpt.mkdir()
    monkeypatch.setattr(ob, "_writable", lambda d: False)
    monkeypatch.setenv(ob.CACHE_ENV, str(tmp_path / "cache"))
    assert ob.onnx_cache_path("ab" * 32, ckpt) == tmp_path / "cache" / "onnx" / (
        "model-" + "ab" * 8 + ".onnx"
    )
    # an export that ships next to the checkpoint is used even when read-only
    (ckpt / ("model-" + "ab" * 8 + ".onnx")).write_bytes(b"x")
    assert ob.onnx_cache_path("ab" * 32, ckpt).parent == ckpt
    # the bundled model's folder is never written to, even in an editable install
    monkeypatch.setattr(ob, "_writable", lambda d: True)
    bundled = Path(ob.__file__).resolve().parents[1] / "models" / "default"
    assert ob.onnx_cache_path("cd" * 32, bundled).parent == tmp_path / "cache" / "onnx"


def test_choice_is_measured_once_and_remembered(ckpt, tmp_path, monkeypatch):
    monkeypatch.setenv(ob.CACHE_ENV, str(tmp_path / "cache"))
    model, spec, checksum, seg = _loaded(ckpt)
    calls = []

    def fake_measure(runner, torch_forward, spec):
        calls.append(1)
        return {"torch": 0.5, "onnx": 0.1}

    monkeypatch.setattr(ob, "measure_backends", fake_measure)
    kw = {
        "requested": "auto",
        "checksum": checksum,
        "checkpoint": ckpt,
        "threads": 1,
        "torch_forward": seg._torch_forward,
    }
    assert ob.select_cpu_backend(model, spec, **kw) is not None
    assert ob.select_cpu_backend(model, spec, **kw) is not None
    assert len(calls) == 1
    stored = json.loads((tmp_path / "cache" / ob.CHOICE_FILE).read_text())
    assert [v["backend"] for v in stored.values()] == ["onnx"]
    # a new process (empty memo) reads the file instead of measuring again
    ob.forget_backend_choices()
    assert ob.select_cpu_backend(model, spec, **kw) is not None
    assert len(calls) == 1
    # where PyTorch measured faster, auto keeps PyTorch
    ob.forget_backend_choices()
    (tmp_path / "cache" / ob.CHOICE_FILE).unlink()
    monkeypatch.setattr(ob, "measure_backends", lambda *a: {"torch": 0.1, "onnx": 0.5})
    assert ob.select_cpu_backend(model, spec, **kw) is None
    ob.forget_backend_choices()


def test_onnx_engine_matches_torch_engine(checkpoint, frames_factory):
    frames = frames_factory(3, 150, 100, seed=9)
    torch_seg = Segmenter.from_checkpoint(
        checkpoint, settings=EngineSettings(device="cpu", backend="torch", tile_size=96, threads=1)
    )
    onnx_seg = Segmenter.from_checkpoint(
        checkpoint, settings=EngineSettings(device="cpu", backend="onnx", tile_size=96, threads=1)
    )
    assert onnx_seg.backend == "onnx" and torch_seg.backend == "torch"
    np.testing.assert_allclose(
        onnx_seg.predict_logits(frames), torch_seg.predict_logits(frames), atol=2e-3, rtol=1e-3
    )
    assert (onnx_seg.predict(frames) == torch_seg.predict(frames)).mean() > 0.999
    # the export holds the weights it was made from: new weights need a new engine
    model, _, _ = load_checkpoint(checkpoint)
    with pytest.raises(ConfigError, match="ONNX export of the weights it was built with"):
        onnx_seg.load_weights(model)
