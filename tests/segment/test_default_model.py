"""The bundled default model: it ships, loads safely, and segments crystals, not bubbles."""

from __future__ import annotations

import re

import numpy as np
import pytest

from crystalseg.errors import ConfigError
from crystalseg.models.checkpoint import (
    default_checkpoint_path,
    load_checkpoint,
    read_checkpoint_meta,
)
from crystalseg.segment import Segmenter
from crystalseg.segment.engine import EngineSettings
from crystalseg.synth import SynthConfig, SyntheticRun


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    return Segmenter.from_checkpoint(None, settings=EngineSettings(backend="torch", threads=1))


def test_bundled_model_ships_with_its_recipe_and_scores() -> None:
    model, spec, meta = load_checkpoint(default_checkpoint_path())
    assert spec.codes == ("background", "crystal", "boundary")
    assert spec.scaling == "percentile"
    assert meta["weights"]["stored_dtype"] == "torch.float16"
    # the commands as they ran: the recipe lived in crystalseg.models until issue 28
    ran = re.compile(r"python -m crystalseg\.(models|train)\.recipe ")
    assert all(ran.match(c) for c in meta["recipe_commands"])
    assert meta["metrics"][-1]["iou"]["crystal"] > 0.7
    assert next(model.parameters()).dtype.is_floating_point


def test_bundled_model_finds_crystals_on_a_held_out_clear_frame(segmenter: Segmenter) -> None:
    frame = SyntheticRun(SynthConfig(frames=6, height=256, width=256, seed=5, scenario="clear"))
    truth_iou = []
    for t in (2, 5):
        f = frame.render(t)
        pred = segmenter.predict(f.image[None])[0] > 0
        true = f.labels > 0
        truth_iou.append(np.count_nonzero(pred & true) / np.count_nonzero(pred | true))
    assert np.mean(truth_iou) > 0.8


def test_bundled_model_handles_uint16_like_uint8(segmenter: Segmenter) -> None:
    f = SyntheticRun(SynthConfig(frames=3, height=128, width=160, seed=9)).render(2)
    as16 = f.image.astype(np.uint16) * 257
    a = segmenter.predict(f.image[None])[0]
    b = segmenter.predict(as16[None])[0]
    assert np.mean(a == b) > 0.999  # percentile scaling: the bit depth does not matter


def test_recipe_keeps_evaluation_seeds_out_of_training(tmp_path) -> None:
    from crystalseg.train import recipe

    with pytest.raises(ValueError, match="lower seeds are for evaluation"):
        recipe.make_training_runs(tmp_path, runs_per_scenario=1, first_seed=recipe.FIRST_SEED - 1)
    with pytest.raises(SystemExit):
        recipe.main([str(tmp_path / "model"), "--first-seed", "7", "--workdir", str(tmp_path)])
    assert not (tmp_path / "runs").exists()


def _planned_scenarios(tmp_path, monkeypatch, **kw) -> list:
    """The scenarios of 40 clear training runs that the recipe would render with ``kw``."""
    from crystalseg.train import recipe

    made = []
    monkeypatch.setattr(recipe, "_render", made.append)
    monkeypatch.setattr(recipe, "SCENARIO_NAMES", ("clear",))
    recipe.make_training_runs(tmp_path, runs_per_scenario=40, **kw)
    return [config.scenario_params for _, config in made]


def test_recipe_faint_runs_are_drawn_fainter(tmp_path, monkeypatch) -> None:
    from crystalseg.train import recipe

    planned = _planned_scenarios(tmp_path, monkeypatch, faint=0.5)
    faint = [p.contrast == recipe.FAINT_CONTRAST for p in planned]
    assert 10 < sum(faint) < 30  # about half, chosen by seed
    for params, is_faint in zip(planned, faint, strict=True):
        assert params.min_visible_od == (recipe.FAINT_MIN_VISIBLE_OD if is_faint else 0.12)
    with pytest.raises(ValueError, match="fraction"):
        recipe.make_training_runs(tmp_path, runs_per_scenario=1, faint=1.5)


def test_recipe_rim_inside_runs_draw_their_rims_inside(tmp_path, monkeypatch) -> None:
    from crystalseg.train import recipe

    planned = _planned_scenarios(tmp_path, monkeypatch, rim_inside=0.5)
    inside = [p.rim_outside == recipe.RIM_INSIDE_OUTSIDE for p in planned]
    assert 10 < sum(inside) < 30  # about half, chosen by seed
    assert {p.rim_outside for p in planned} == {(1.0, 1.0), (0.0, 1.0)}
    with pytest.raises(ValueError, match="rim_inside"):
        recipe.make_training_runs(tmp_path, runs_per_scenario=1, rim_inside=-0.1)


def test_recipe_depth_spread_is_parsed_and_checked() -> None:
    import argparse

    from crystalseg.train import recipe

    assert recipe._spread_range("0.4,0.9") == (0.4, 0.9)
    for bad in ("0.9,0.4", "-1,0.5", "0.4", "a,b"):
        with pytest.raises(argparse.ArgumentTypeError, match="LOW"):
            recipe._spread_range(bad)


def _tiny_runs_settings(tmp_path, **kw):
    """Three tiny synthetic runs in ``tmp_path/runs`` and CPU training settings on them
    (a test encoder, the recipe's classes, a third of the runs held out)."""
    from crystalseg.synth import SynthConfig, synthesize_run
    from crystalseg.train import TrainSettings, recipe

    for k in range(3):
        config = SynthConfig(frames=4, height=64, width=64, seed=1000 + k, scenario="clear")
        synthesize_run(tmp_path / "runs" / f"clear-{k}.zarr", config)
    return TrainSettings.from_flat(
        data=(tmp_path / "runs",),
        codes=recipe.CODES,
        encoder="tu-test_resnet",
        decoder_channels=(16, 16, 8, 8, 8),
        init="none",
        crop_size=32,
        batch_size=4,
        device="cpu",
        valid_fraction=0.34,
        scaling="percentile",
        augment="none",
        progress=False,
        **kw,
    )


def test_recipe_epochs_auto_fit_the_time_budget(tmp_path) -> None:
    from crystalseg.train import recipe

    settings = _tiny_runs_settings(tmp_path)
    # a budget the probe alone spends: one epoch; two minutes of tiny steps: many
    assert recipe.epochs_for_budget(settings, 0.001, probe_runs=3, probe_steps=2) == 1
    assert recipe.epochs_for_budget(settings, 2.0, probe_runs=3, probe_steps=2) > 5
    with pytest.raises(SystemExit):  # auto needs a budget
        recipe.main([str(tmp_path / "model"), "--epochs", "auto", "--workdir", str(tmp_path)])


def _tiny_checkpoints(tmp_path, codes, seeds=(0, 1)) -> list:
    import torch

    from crystalseg.models import ModelSpec, build_model, save_checkpoint

    spec = ModelSpec(
        "tu-test_resnet", tuple(codes), decoder_channels=(16, 16, 8, 8, 8), scaling="percentile"
    )
    out = []
    for seed in seeds:
        torch.manual_seed(seed)
        model = build_model(spec)
        with torch.no_grad():  # batch-norm statistics that differ between the two
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.normal_()
                    m.running_var.uniform_(0.5, 2.0)
                    m.num_batches_tracked.fill_(10 + seed)
        training = {"settings": {"command": f"train c{seed}"}}
        out.append(
            save_checkpoint(
                tmp_path / f"c{seed}",
                model,
                spec,
                training=training,
                metrics=[],
                data_fingerprint="x",
            )
        )
    return out


def test_recipe_average_is_the_mean_of_its_checkpoints(tmp_path) -> None:
    import torch
    from safetensors.torch import load_file

    from crystalseg.models import ModelSpec, build_model, save_checkpoint
    from crystalseg.train import recipe

    c0, c1 = _tiny_checkpoints(tmp_path, recipe.CODES)
    out = recipe.average_checkpoints([c0, c1], tmp_path / "avg")
    a, b = (load_file(str(c / "model.safetensors")) for c in (c0, c1))
    mean = load_file(str(out / "model.safetensors"))
    assert mean.keys() == a.keys()
    for k, v in mean.items():
        if v.is_floating_point():
            torch.testing.assert_close(v, (a[k] + b[k]) / 2, rtol=0, atol=1e-6)
        else:  # step counters: the first checkpoint's
            assert torch.equal(v, a[k])
    _model, spec, meta = load_checkpoint(out)  # a loadable, checksummed checkpoint
    assert spec.encoder == "tu-test_resnet"
    sources = meta["training"]["init"]["checkpoints"]
    assert meta["training"]["init"]["kind"] == "average"
    assert [s["sha256"] for s in sources] == [
        read["weights"]["sha256"] for read in (load_checkpoint(c)[2] for c in (c0, c1))
    ]
    assert [s["epochs_done"] for s in sources] == [None, None]  # none recorded in c0, c1
    assert recipe._lineage(out) == ["train c0", "train c1"]  # both sources' commands

    with pytest.raises(ValueError, match="two or more"):
        recipe.average_checkpoints([c0], tmp_path / "one")
    with pytest.raises(SystemExit):  # refused before any run is rendered
        recipe.main([str(tmp_path / "one"), "--workdir", str(tmp_path), "--average", str(c0)])
    assert not (tmp_path / "runs").exists()
    other = ModelSpec(
        "tu-test_resnet", ("background", "crystal"), decoder_channels=(16, 16, 8, 8, 8)
    )
    c2 = save_checkpoint(
        tmp_path / "c2", build_model(other), other, training={}, metrics=[], data_fingerprint="x"
    )
    with pytest.raises(ValueError, match="not the same network"):
        recipe.average_checkpoints([c0, c2], tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_recipe_average_is_validated_on_the_held_out_runs_and_ships(tmp_path) -> None:
    from crystalseg.train import recipe
    from crystalseg.train.settings import settings_data, settings_learner

    settings = _tiny_runs_settings(
        tmp_path, command="python -m crystalseg.train.recipe avg --average c0 c1"
    )
    c0, c1 = _tiny_checkpoints(tmp_path, recipe.CODES)
    out = recipe.average_checkpoints([c0, c1], tmp_path / "avg", settings)
    meta = read_checkpoint_meta(out)
    (record,) = meta["metrics"]
    # the figures are those of the saved average on the same held-out frames
    data = settings_data(settings)
    again = settings_learner(settings, data, init=out, progress=False).validate()
    assert record["foreground_iou"] == pytest.approx(again["foreground_iou"], abs=1e-9)
    assert record["valid_loss"] == pytest.approx(again["valid_loss"], rel=1e-5)
    assert meta["training"]["data"]["n_valid"] == len(data.valid_items) > 0
    shipped = recipe.ship_model(out, tmp_path / "ship")
    commands = read_checkpoint_meta(shipped)["recipe_commands"]
    assert commands[:3] == ["train c0", "train c1", settings.command]
    assert load_checkpoint(shipped)[2]["weights"]["stored_dtype"] == "torch.float16"


def _magnified(scale: int) -> tuple[np.ndarray, np.ndarray]:
    """A held-out clear frame (seed 5, t = 5) at ``scale``x: bilinear, then ``scale - 1``
    px of optical blur and per-pixel noise, so edges are ``scale`` times wider than
    the model ever saw; and its true foreground."""
    from scipy import ndimage as ndi

    f = SyntheticRun(SynthConfig(frames=6, height=192, width=192, seed=5, scenario="clear")).render(
        5
    )
    if scale == 1:
        return f.image, f.labels > 0
    image = ndi.gaussian_filter(ndi.zoom(f.image.astype(float), scale, order=1), scale - 1.0)
    image += np.random.default_rng(5).normal(0, 2.0, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), ndi.zoom(f.labels > 0, scale, order=0)


def _iou(pred: np.ndarray, true: np.ndarray) -> float:
    return np.count_nonzero(pred & true) / np.count_nonzero(pred | true)


def test_resize_recovers_a_magnified_recording() -> None:
    """The frame magnified 3x loses most of its crystals at resize 1 and comes back at
    resize 0.5, above 0.9 IoU."""
    image, true = _magnified(3)
    iou = {}
    for factor in (1.0, 0.5):
        seg = Segmenter.from_checkpoint(
            None, settings=EngineSettings(backend="torch", threads=1, resize=factor)
        )
        mask = seg.predict(image[None])[0]
        assert mask.shape == image.shape
        iou[factor] = _iou(mask > 0, true)
    assert iou[1.0] < 0.7 and iou[0.5] > 0.9, iou


def test_auto_resize_keeps_full_size_at_home_and_shrinks_a_magnified_frame(
    segmenter: Segmenter,
) -> None:
    """choose_resize keeps 1 on the frame at the model's own scale and on a frame with
    no crystals, and shrinks the 3x frame to a factor that recovers it (IoU > 0.9,
    against < 0.7 at full size); resize="auto" predicts exactly as that factor."""
    from crystalseg.segment import choose_resize

    plain, _ = _magnified(1)
    choice = choose_resize(segmenter, plain[None])
    # 192 px: 0.25 would shrink it below AUTO_RESIZE_MIN_SIDE (64 px), so it is not tried
    assert choice.factor == 1.0 and set(choice.stability) == {1.0, 0.7, 0.5, 0.35}
    blank = np.random.default_rng(0).normal(128, 3, (1, 256, 256)).clip(0, 255).astype(np.uint8)
    assert choose_resize(segmenter, blank).factor == 1.0
    one = choose_resize(segmenter, blank[0], factors=(0.5, 1.0, 0.5, 0.7))
    assert one.frames == 1 and list(one.stability) == [1.0, 0.7, 0.5]  # a 2-D frame is one
    for wrong in ((0.5, 0.25), (2.0, 1.0)):
        with pytest.raises(ConfigError, match="must include 1"):
            choose_resize(segmenter, blank, factors=wrong)
    with pytest.raises(ConfigError, match="at least one frame"):
        choose_resize(segmenter, [])
    image, true = _magnified(3)
    choice = choose_resize(segmenter, [image])
    assert choice.factor < 1.0 and choice.frames == 1, choice
    assert choice.stability[choice.factor] >= choice.stability[1.0] + 0.05
    chosen = segmenter.with_resize(choice.factor)
    assert chosen._model is segmenter._model  # the network is shared, not loaded again
    assert _iou(chosen.predict(image[None])[0] > 0, true) > 0.9
    auto = Segmenter.from_checkpoint(
        None, settings=EngineSettings(backend="torch", threads=1, resize="auto")
    )
    np.testing.assert_array_equal(auto.predict(image[None]), chosen.predict(image[None]))


def test_a_magnified_run_is_segmented_at_the_factor_auto_chooses(tmp_path, run_factory) -> None:
    """segment_run's default (resize="auto") shrinks a magnified run once for all its
    frames and records the factor; running it again keeps that factor (nothing to do),
    while an explicit other factor is a different mask setting. measure says so."""
    from click.testing import CliRunner

    from crystalseg.cli import cli
    from crystalseg.errors import StageStateError
    from crystalseg.segment import segment_run
    from crystalseg.store import stage_info

    image, true = _magnified(3)
    path = tmp_path / "run.zarr"
    run_factory(path, np.stack([image, image[:, ::-1]]), frames_per_chunk=1)
    settings = {"device": "cpu", "backend": "torch", "threads": 1}
    mask = segment_run(path, None, **settings).values
    factor = stage_info(path)["segment"]["settings"]["resize"]
    assert factor < 1.0
    assert _iou(mask[0] > 0, true) > 0.9 and _iou(mask[1] > 0, true[:, ::-1]) > 0.9
    np.testing.assert_array_equal(segment_run(path, None, **settings).values, mask)
    with pytest.raises(StageStateError, match="resize"):
        segment_run(path, None, **settings, resize=1.0)
    result = CliRunner().invoke(cli, ["-q", "measure", str(path), "--no-stream"])
    assert result.exit_code == 0, result.output
    assert f"frames shrunk by {factor:g} before the model" in result.output


@pytest.mark.gpu
def test_auto_resize_on_cuda_chooses_as_on_the_cpu(segmenter: Segmenter) -> None:
    """On the GPU (bf16/fp16, resizing on the device) resize="auto" picks the CPU's factor
    for the 3x frame and keeps 1 at the model's own scale; the masks agree with the CPU's
    at that factor and recover the crystals."""
    from crystalseg.segment import choose_resize

    image, true = _magnified(3)
    plain, _ = _magnified(1)
    cuda = Segmenter.from_checkpoint(None, settings=EngineSettings(device="cuda", resize="auto"))
    assert choose_resize(cuda, plain[None]).factor == 1.0
    factor = choose_resize(segmenter, [image]).factor
    assert choose_resize(cuda, [image]).factor == factor < 1.0
    on_gpu = cuda.predict(image[None])[0]
    on_cpu = segmenter.with_resize(factor).predict(image[None])[0]
    assert (on_gpu == on_cpu).mean() > 0.99
    assert _iou(on_gpu > 0, true) > 0.9
