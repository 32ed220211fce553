"""Checkpoints: spec validation, safe round trip, refusal of pickles and tampering."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import crystalseg.models.checkpoint as ckpt
from crystalseg.errors import CheckpointError, ConfigError
from crystalseg.models import (
    ModelSpec,
    build_model,
    convert_state_dict,
    default_checkpoint_path,
    load_checkpoint,
    load_encoder_weights,
    prepare_batch,
    save_checkpoint,
    to_unit,
)

TINY = dict(encoder="tu-test_resnet", decoder_channels=(16, 16, 8, 8, 8))


def tiny_spec(**kw) -> ModelSpec:
    return ModelSpec(codes=("background", "crystal"), **{**TINY, **kw})


def saved(tmp_path: Path, spec: ModelSpec | None = None) -> tuple[Path, torch.nn.Module]:
    spec = spec or tiny_spec()
    torch.manual_seed(0)
    model = build_model(spec).eval()
    out = save_checkpoint(
        tmp_path / "model",
        model,
        spec,
        training={"epochs": 3, "path": tmp_path},
        metrics=[{"epoch": 1, "iou": {"crystal": 0.5}}],
        data_fingerprint="abc",
    )
    return out, model


class Boom:
    """Pickling this object makes unpickling create a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_unknown_encoder_lists_close_names() -> None:
    with pytest.raises(ConfigError, match="resnet34") as err:
        ModelSpec("resnet43", ("background", "crystal"))
    assert "unknown encoder 'resnet43'" in str(err.value)
    with pytest.raises(ConfigError, match="tu-"):
        ModelSpec("tu-resnet1800", ("background", "crystal"))


@pytest.mark.parametrize(
    "kw",
    [
        {"codes": ("only",)},
        {"codes": ("a", "a")},
        {"in_channels": 2},
        {"mean": (0.5, 0.5)},
        {"std": (0.0,)},
        {"scaling": "minmax"},
        {"architecture": "fpn"},
        {"extra_heads": ("distance",)},
    ],
)
def test_spec_validation(kw: dict) -> None:
    with pytest.raises(ConfigError):
        ModelSpec(**{**TINY, "codes": ("background", "crystal"), **kw})


def test_spec_dict_round_trip() -> None:
    spec = tiny_spec(in_channels=3, mean=(0.1, 0.2, 0.3), std=(1, 2, 3), scaling="percentile")
    again = ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec
    assert spec.stride == 32 and spec.n_classes == 2


def test_round_trip_gives_identical_predictions(tmp_path: Path) -> None:
    out, model = saved(tmp_path)
    loaded, spec, meta = load_checkpoint(out)
    assert spec == tiny_spec()
    assert meta["data_fingerprint"] == "abc"
    assert meta["metrics"][0]["iou"]["crystal"] == 0.5
    assert meta["training"]["path"] == str(tmp_path)
    assert meta["format_version"] == ckpt.FORMAT_VERSION
    x = torch.randn(2, 1, 64, 96)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    # a path to model.json or to the weights also works
    assert load_checkpoint(out / "model.json")[1] == spec
    assert load_checkpoint(out / "model.safetensors")[1] == spec


def test_pickle_file_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "model.pt"
    torch.save({"weight": Boom(marker)}, evil)
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        load_checkpoint(evil)
    assert not marker.exists()


def test_pickle_payload_inside_a_checkpoint_is_refused(tmp_path: Path) -> None:
    out, _ = saved(tmp_path)
    marker = tmp_path / "pwned"
    torch.save({"weight": Boom(marker)}, out / "model.safetensors")
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        load_checkpoint(out)
    assert not marker.exists()
    # a directory holding only a pickled model is refused too
    lone = tmp_path / "lone"
    lone.mkdir()
    torch.save({"w": torch.zeros(1)}, lone / "model.pth")
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        load_checkpoint(lone)


def test_tampered_weights_fail_the_checksum(tmp_path: Path) -> None:
    out, _ = saved(tmp_path)
    blob = bytearray((out / "model.safetensors").read_bytes())
    blob[-5] ^= 0xFF  # flip bits inside the last tensor's data
    (out / "model.safetensors").write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(out)


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"no model\.json"):
        load_checkpoint(tmp_path / "empty")
    out, _ = saved(tmp_path)
    (out / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="lacks its weights"):
        load_checkpoint(out)
    (out / "model.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(out)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(format_version=ckpt.FORMAT_VERSION + 1), "Upgrade"),
        (lambda m: m["spec"].update(architecture="fpn"), "'fpn'"),
        (lambda m: m.update(format="something-else"), "not a crystalseg model"),
        (lambda m: m["spec"].update(encoder="resnet43"), "unknown encoder"),
        (lambda m: m["spec"].update(codes=["a", "b", "c"]), "do not fit"),
    ],
)
def test_incompatible_json_is_a_clear_error(tmp_path: Path, edit, message: str) -> None:
    out, _ = saved(tmp_path)
    meta = json.loads((out / "model.json").read_text())
    edit(meta)
    (out / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=message) as err:
        load_checkpoint(out)
    assert "\n" not in str(err.value)


def test_default_checkpoint_path() -> None:
    if (Path(ckpt.__file__).parent / "default" / "model.json").exists():
        assert (default_checkpoint_path() / "model.safetensors").exists()
    else:
        with pytest.raises(CheckpointError, match="no default model ships"):
            default_checkpoint_path()


def test_encoder_weights_from_file_with_rgb_kernels_summed(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    rgb = tiny_spec(in_channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)
    torch.manual_seed(1)
    source = build_model(rgb).encoder.state_dict()
    save_file({k: v.contiguous() for k, v in source.items()}, tmp_path / "enc.safetensors")
    grey = tiny_spec()
    model = build_model(grey)
    load_encoder_weights(model, grey, tmp_path / "enc.safetensors")
    got = model.encoder.state_dict()
    first = next(k for k, v in source.items() if v.ndim == 4 and v.shape[1] == 3)
    torch.testing.assert_close(got[first], source[first].sum(1, keepdim=True))
    other = [k for k in source if k != first and source[k].is_floating_point()][-1]
    torch.testing.assert_close(got[other], source[other])


def test_imagenet_without_local_weights_says_how(monkeypatch) -> None:
    monkeypatch.setattr(ckpt, "_hf_cached_file", lambda *a, **k: None)
    spec = ModelSpec("mobilenet_v2", ("background", "crystal"))
    with pytest.raises(CheckpointError, match="--init none") as err:
        load_encoder_weights(build_model(spec), spec, "imagenet")
    assert "smp-hub/mobilenet_v2.imagenet" in str(err.value)


def test_imagenet_from_the_local_cache(tmp_path: Path, monkeypatch) -> None:
    from safetensors.torch import save_file

    spec = ModelSpec("mobilenet_v2", ("background", "crystal"), in_channels=3)
    torch.manual_seed(2)
    weights = build_model(spec).encoder.state_dict()
    save_file({k: v.contiguous() for k, v in weights.items()}, tmp_path / "model.safetensors")
    calls = []
    monkeypatch.setattr(
        ckpt,
        "_hf_cached_file",
        lambda repo, name, rev: calls.append(repo) or str(tmp_path / "model.safetensors"),
    )
    model = build_model(spec)
    load_encoder_weights(model, spec, "imagenet")
    assert calls == ["smp-hub/mobilenet_v2.imagenet"]
    key = next(iter(weights))
    torch.testing.assert_close(model.encoder.state_dict()[key], weights[key])


def test_convert_trusted_state_dict(tmp_path: Path) -> None:
    spec = tiny_spec()
    torch.manual_seed(4)
    model = build_model(spec).eval()
    torch.save(model.state_dict(), tmp_path / "old.pth")
    out = convert_state_dict(tmp_path / "old.pth", tmp_path / "conv", spec=spec)
    loaded, _, _ = load_checkpoint(out)
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_prepare_batch_scaling_rules() -> None:
    spec = tiny_spec(mean=(0.5,), std=(0.25,))
    u8 = torch.tensor([[[0, 255], [51, 102]]], dtype=torch.uint8)
    np.testing.assert_allclose(
        prepare_batch(u8, spec)[0, 0].numpy(), [[-2.0, 2.0], [-1.2, -0.4]], atol=1e-6
    )
    u16 = torch.tensor([[[0, 65535]]], dtype=torch.int32)
    np.testing.assert_allclose(to_unit(u16, spec)[0, 0].numpy(), [[0.0, 1.0]])
    pct = tiny_spec(scaling="percentile", percentiles=(0.0, 100.0))
    raw = torch.tensor([[[10, 20, 30, 50]]], dtype=torch.uint8)
    np.testing.assert_allclose(to_unit(raw, pct)[0, 0].numpy(), [[0.0, 0.25, 0.5, 1.0]])
    rgb = torch.tensor([[[[255, 0, 0]]]], dtype=torch.uint8)
    assert to_unit(rgb, spec)[0, 0, 0, 0].item() == pytest.approx(0.2125)
    three = tiny_spec(in_channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)
    grey3 = to_unit(u8, three)
    assert grey3.shape == (1, 3, 2, 2) and torch.equal(grey3[:, 0], grey3[:, 2])


def test_checkpoint_files_get_the_umask_mode_not_private_temp_ones(tmp_path: Path) -> None:
    """Written atomically through a temporary file, the checkpoint still gets the mode a
    plain write gives (colleagues on a shared drive can read the model)."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        assert ckpt.shared_file_mode() == 0o644
        out, _ = saved(tmp_path)
    finally:
        os.umask(old)
    for name in (ckpt.WEIGHTS_FILE, ckpt.META_FILE):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name


def test_metrics_that_are_not_numbers_are_written_as_null(tmp_path: Path) -> None:
    """model.json is strict JSON (no NaN): a NaN metric, also a numpy or torch scalar
    one (a class absent from the validation frames), becomes null."""
    import json

    import numpy as np

    from crystalseg.models.checkpoint import META_FILE

    metrics = [
        {"iou": {"a": float("nan"), "b": np.float32("nan"), "c": torch.tensor(float("inf"))}},
        {"iou": {"a": np.float64(0.5), "b": torch.tensor(0.25)}, "n": np.array([1, 2])},
    ]
    model = build_model(tiny_spec())
    out = save_checkpoint(
        tmp_path / "m", model, tiny_spec(), training={}, metrics=metrics, data_fingerprint="x"
    )
    written = json.loads((out / META_FILE).read_text())["metrics"]
    assert written == [
        {"iou": {"a": None, "b": None, "c": None}},
        {"iou": {"a": 0.5, "b": 0.25}, "n": [1, 2]},
    ]
