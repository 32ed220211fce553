"""The learner: loss goes down, checkpoints round-trip, resume continues the schedule."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from PIL import Image
from torch import nn

import crystalseg.train.learner as learner_mod
from crystalseg.errors import CheckpointError, ConfigError, StageStateError
from crystalseg.models import ModelSpec, build_model, load_checkpoint, save_checkpoint
from crystalseg.train import (
    Learner,
    ScheduleSettings,
    TrainSettings,
    pairs,
    train_model,
    unet_learner,
)
from crystalseg.train.learner import confusion_metrics

CODES = ["background", "crystal"]
TINY = "tu-test_resnet"
TINY_DEC = (16, 16, 8, 8, 8)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def write_pairs(folder: Path, n: int = 5, size: int = 64, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        mask = np.zeros((size, size), np.uint8)
        for _ in range(3):
            cy, cx = rng.integers(8, size - 8, 2)
            mask[(yy - cy) ** 2 + (xx - cx) ** 2 < rng.integers(20, 60)] = 255
        image = (70 + mask // 2 + rng.normal(0, 5, mask.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"{i}.png")
        Image.fromarray(mask).save(folder / f"{i}_mask.png")
    return folder


@pytest.fixture
def data(tmp_path: Path):
    return pairs(write_pairs(tmp_path / "d"), codes=CODES, crop_size=64, batch_size=4, seed=1)


def tiny(data, **kw) -> Learner:
    kw.setdefault("progress", False)
    kw.setdefault("min_steps_per_epoch", 1)  # the tiny sets' own crops, fast
    return unet_learner(data, encoder=TINY, init="none", decoder_channels=TINY_DEC, **kw)


def test_steps_reduce_the_loss_on_a_fixed_batch(data) -> None:
    learner = tiny(data, augment="none")
    x, y = next(data.train_batches(learner.spec, np.random.default_rng(0), batch_size=4))
    x = learner_mod.normalise(x, learner.spec)
    opt = learner._optimizer(1e-2)
    losses = [learner._step(x, y, opt, None) for _ in range(15)]
    assert losses[-1] < 0.5 * losses[0]


def test_fit_writes_best_and_last_with_metrics(tmp_path: Path, data) -> None:
    learner = tiny(data, output_dir=tmp_path / "out")
    history = learner.fit_one_cycle(2, 1e-2)
    assert [h["epoch"] for h in history] == [1, 2]
    for h in history:
        assert set(h["iou"]) == set(CODES) and set(h["dice"]) == set(CODES)
        assert np.isfinite(h["train_loss"]) and np.isfinite(h["valid_loss"])
    meta = json.loads((tmp_path / "out" / "model.json").read_text())
    assert meta["training"]["init"] == {"kind": "none"}
    assert meta["training"]["data"]["n_valid"] == 1
    assert meta["data_fingerprint"] == data.fingerprint
    last = json.loads((tmp_path / "out" / "last" / "model.json").read_text())
    assert len(last["metrics"]) == 2
    assert (tmp_path / "out" / "last" / "training_state.safetensors").exists()
    assert len(learner.lrs) == 2 * learner.steps_per_epoch()


def test_checkpoint_round_trip_gives_identical_predictions(tmp_path: Path, data) -> None:
    learner = tiny(data)
    learner.fit_one_cycle(1, 1e-2)
    learner.save(tmp_path / "m")
    _, spec, _ = load_checkpoint(tmp_path / "m")
    image = data.load(data.items[0])[0]
    again = unet_learner(data, init=tmp_path / "m", progress=False)
    assert again.spec == spec
    np.testing.assert_array_equal(again.predict(image), learner.predict(image))
    assert again.init_info["kind"] == "checkpoint"


def test_resume_continues_the_schedule(tmp_path: Path, data) -> None:
    full = tiny(data)
    full.fit_one_cycle(3, 5e-3)
    part = tiny(data, output_dir=tmp_path / "run")
    part.fit_one_cycle(3, 5e-3, on_epoch_end=lambda rec: rec["epoch"] == 1)
    assert len(part.history) == 1
    resumed = tiny(data, output_dir=tmp_path / "run")
    resumed.fit_one_cycle(3, 5e-3, resume=tmp_path / "run")
    steps = full.steps_per_epoch()
    assert len(resumed.lrs) == 3 * steps
    np.testing.assert_allclose(resumed.lrs, full.lrs, rtol=1e-12)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    np.testing.assert_allclose(
        [h["train_loss"] for h in resumed.history],
        [h["train_loss"] for h in full.history],
        rtol=1e-4,
    )
    for a, b in zip(
        resumed.model.state_dict().values(), full.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_resume_from_the_last_checkpoint_trains_on_as_the_run_did(tmp_path: Path, data) -> None:
    """``train --resume`` builds its learner on ``last/``, a checkpoint, which by
    default freezes the batch-norm statistics; a run from random weights never did,
    and the resumed weights ended 0.0023 from the uninterrupted run's."""
    full = tiny(data)
    full.fit_one_cycle(2, 5e-3)
    part = tiny(data, output_dir=tmp_path / "run")
    part.fit_one_cycle(2, 5e-3, on_epoch_end=lambda rec: True)
    last = learner_mod.find_resume_dir(tmp_path / "run")
    resumed = unet_learner(data, encoder=TINY, init=last, progress=False, min_steps_per_epoch=1)
    assert resumed.freeze_bn  # what the checkpoint alone would say
    resumed.fit_one_cycle(2, 5e-3, resume=tmp_path / "run")
    assert not resumed.freeze_bn
    for (name, a), b in zip(
        resumed.model.state_dict().items(), full.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_resume_counts_on_towards_the_early_stop(tmp_path: Path, data) -> None:
    part = tiny(data, output_dir=tmp_path / "run")
    part.best_score = 2.0  # nothing can beat an IoU of 2: every epoch is stale
    part.fit_one_cycle(4, 1e-3, early_stop=2, on_epoch_end=lambda rec: rec["epoch"] == 1)
    resumed = tiny(data, output_dir=tmp_path / "run")
    resumed.fit_one_cycle(4, 1e-3, early_stop=2, resume=tmp_path / "run")
    assert [h["epoch"] for h in resumed.history] == [1, 2]  # stopped as the whole run would
    again = tiny(data, output_dir=tmp_path / "run")
    again.fit_one_cycle(4, 1e-3, early_stop=2, resume=tmp_path / "run")
    assert len(again.history) == 2  # a run that stopped early is finished


def test_resume_with_another_schedule_is_refused(tmp_path: Path, data) -> None:
    part = tiny(data, output_dir=tmp_path / "run")
    part.fit_one_cycle(2, 5e-3, on_epoch_end=lambda rec: True)
    with pytest.raises(ConfigError, match="epochs"):
        tiny(data).fit_one_cycle(4, 5e-3, resume=tmp_path / "run")
    with pytest.raises(CheckpointError, match="no training state"):
        tiny(data).fit_one_cycle(2, 5e-3, resume=tmp_path)


def test_lr_find_returns_a_finite_suggestion_and_restores_weights(data) -> None:
    learner = tiny(data)
    before = {k: v.clone() for k, v in learner.model.state_dict().items()}
    res = learner.lr_find(num_it=12, end_lr=1.0)
    assert 5 < len(res.lrs) <= 12 and len(res.losses) == len(res.lrs)
    assert np.all(np.diff(res.lrs) > 0)
    assert np.isfinite(res.suggestion) and 1e-7 <= res.suggestion <= 1.0
    for k, v in learner.model.state_dict().items():
        assert torch.equal(v, before[k])
    assert res.plot().axes


def test_early_stop_stops(data) -> None:
    learner = tiny(data)
    learner.best_score = 2.0  # nothing can beat an IoU of 2
    learner.fit_one_cycle(5, 1e-3, early_stop=1)
    assert len(learner.history) == 1


def test_equal_particle_f1_is_ranked_by_mean_iou(data, monkeypatch) -> None:
    """On a few annotated frames the particle F1 is soon 1.0 in every epoch: the epoch
    with the better mean IoU counts as better, so early stopping waits for it and the
    best checkpoint is not the first epoch."""
    learner = tiny(data)
    ious = iter([0.5, 0.6, 0.7, 0.7, 0.7])
    monkeypatch.setattr(learner, "validate", lambda: {"instance_f1": 1.0, "mean_iou": next(ious)})
    learner.fit_one_cycle(5, 1e-3, early_stop=2)
    assert len(learner.history) == 5  # epochs 2 and 3 improved, 4 and 5 did not
    assert learner.best_score == 1.0 and learner.best_tiebreak == 0.7
    ious = iter([0.9, 0.8, 0.8])
    learner = tiny(data)
    monkeypatch.setattr(learner, "validate", lambda: {"instance_f1": 1.0, "mean_iou": next(ious)})
    learner.fit_one_cycle(3, 1e-3, early_stop=2)
    assert len(learner.history) == 3 and learner.best_tiebreak == 0.9


SYNTH_CODES = ["background", "crystal", "boundary"]


def synthetic_runs_data(folder: Path, frames: int):
    """Two clear 96x96 synthetic runs (one held out), three classes, true instances."""
    from crystalseg.synth import SynthConfig, synthesize_run

    for k in range(2):
        config = SynthConfig(frames=frames, height=96, width=96, seed=1000 + k, scenario="clear")
        synthesize_run(folder / f"clear-{k}.zarr", config)
    return pairs(folder, codes=SYNTH_CODES, crop_size=64, valid_fraction=0.5)


def class_logits(classes: np.ndarray) -> np.ndarray:
    """Logits (1, K, H, W) whose argmax is the class map ``classes`` (H, W)."""
    return np.eye(len(SYNTH_CODES), dtype=np.float32)[classes].transpose(2, 0, 1)[None]


class FixedEngine:
    """Stands in for the learner's engine where a test needs set predictions: its
    logits are those of ``predict(frames)`` (the first frame's class map)."""

    def __init__(self, predict) -> None:
        self.predict_logits = lambda frames: class_logits(predict(frames[0]))


def test_validation_scores_the_particles_of_synthetic_runs(tmp_path: Path, monkeypatch) -> None:
    data = synthetic_runs_data(tmp_path / "runs", frames=3)
    learner = tiny(data)
    record = learner.validate(workers=3)
    assert 0.0 <= record["instance_f1"] <= 1.0
    assert learner.validate(workers=0) == record  # matching in threads or in line: same
    for item in data.valid_items:  # kept from the frame's read: the store's labels
        stored = xr.open_zarr(item.run, group="truth")["labels"][item.frame].values
        assert np.array_equal(data.instance_truth(item), stored)
    # a model that returns the true class mask finds every particle
    masks = iter([data.load(item)[1] for item in data.valid_items])
    monkeypatch.setattr(learner, "segmenter", lambda: FixedEngine(lambda frame: next(masks)))
    perfect = learner.validate()
    assert perfect["instance_f1"] > 0.95 and perfect["iou"]["crystal"] == 1.0


def test_particle_f1_stays_the_score_on_frames_without_crystals(
    tmp_path: Path, monkeypatch
) -> None:
    """Frames with true instances but no crystal: F1 1.0 for an empty prediction, 0.0 for a
    false particle; the key is always there, so epochs keep ranking by the same score."""
    from crystalseg.train.learner import epoch_score

    data = synthetic_runs_data(tmp_path / "runs", frames=2)
    learner = tiny(data)
    monkeypatch.setattr(data, "instance_truth", lambda item: np.zeros((96, 96), np.int32))

    def engine(blob: bool) -> FixedEngine:
        def predict(frame: np.ndarray) -> np.ndarray:
            classes = np.zeros(frame.shape[:2], dtype=np.int64)
            if blob:
                classes[30:50, 30:50] = 1
            return classes

        return FixedEngine(predict)

    monkeypatch.setattr(learner, "segmenter", lambda: engine(False))
    empty = learner.validate()
    monkeypatch.setattr(learner, "segmenter", lambda: engine(True))
    false_particle = learner.validate()
    assert empty["instance_f1"] == 1.0 and false_particle["instance_f1"] == 0.0
    # no true particle: no count or size to get wrong, the score is the F1
    assert empty["particle_score"] == 1.0 and false_particle["particle_score"] == 0.0
    for record in (empty, false_particle):
        assert epoch_score({**record, "train_loss": 0.1})[1].startswith("validation particle score")


def test_max_minutes_stops_after_the_epoch_that_spends_it(data) -> None:
    learner = tiny(data)
    learner.fit_one_cycle(5, 1e-3, max_minutes=1e-6)
    assert len(learner.history) == 1
    with pytest.raises(ConfigError, match="max_minutes"):
        learner.fit_one_cycle(5, 1e-3, max_minutes=0)


class PixelModel(nn.Module):
    """1x1 convolution: no spatial context, so tiling must reproduce it exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        with torch.no_grad():
            self.conv.weight[:] = torch.tensor([[[[-4.0]]], [[[4.0]]]])
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_predict_tiles_large_images_exactly(data) -> None:
    """predict runs the engine of ``crystalseg segment``, as the learner's
    engine_settings say: tiles of 64 with an overlap of 8 reproduce a pixel model."""
    from crystalseg.segment import EngineSettings

    spec = ModelSpec(TINY, tuple(CODES), decoder_channels=TINY_DEC)
    learner = Learner(
        data, PixelModel(), spec, schedule=ScheduleSettings(device="cpu", batch_size=2)
    )
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (150, 203), dtype=np.uint8)
    expected = (image > 127).astype(np.uint8)  # (x/255 - .5)/.25 > 0
    learner.engine_settings = EngineSettings(
        device="cpu", backend="torch", tile_size=64, tile_overlap=8, threads=1
    )
    np.testing.assert_array_equal(learner.predict(image), expected)
    assert learner.segmenter().settings.tile_size == 64


def test_validation_scores_the_masks_that_segment_writes(tmp_path: Path, data) -> None:
    """Validation runs the engine of ``crystalseg segment`` on the weights of the epoch:
    its IoU is the IoU of the masks that the saved checkpoint segments, and the engine
    built in epoch 1 holds the weights of epoch 2 once epoch 2 validates."""
    from crystalseg.segment import EngineSettings, Segmenter

    learner = tiny(data, augment="none")
    learner.fit_one_cycle(2, 1e-2)
    record = learner.validate()
    assert record["valid_loss"] == pytest.approx(learner.history[-1]["valid_loss"])
    learner.save(tmp_path / "model")
    settings = EngineSettings(device="cpu", backend="torch", threads=1)
    saved = Segmenter.from_checkpoint(tmp_path / "model", settings=settings)
    k = len(CODES)
    confusion = np.zeros(k * k, np.int64)
    for item in data.valid_items:
        image, truth = data.load(item)
        np.testing.assert_allclose(
            learner.segmenter().predict_logits(image[None]),
            saved.predict_logits(image[None]),
            rtol=1e-5,
            atol=1e-5,
        )
        pred = saved.predict(image[None])[0]
        confusion += np.bincount(truth.astype(np.int64).ravel() * k + pred.ravel(), minlength=k * k)
    assert confusion_metrics(confusion.reshape(k, k), CODES)["iou"] == record["iou"]
    engine_weights = learner.segmenter().network.state_dict()
    for name, value in learner.model.state_dict().items():
        assert torch.equal(engine_weights[name], value), name


def test_predict_odd_sizes_and_files(data) -> None:
    learner = tiny(data)
    image = np.random.default_rng(0).integers(0, 255, (45, 71), dtype=np.uint8)
    out = learner.predict(image)
    assert out.shape == (45, 71) and out.dtype == np.uint8 and out.max() <= 1
    path = data.items[0].image
    assert learner.predict(path).shape == data.load(data.items[0])[1].shape


def test_show_results_figure(data) -> None:
    learner = tiny(data)
    assert len(learner.show_results(2).axes) == 3  # one validation image: one row
    learner.data.valid_items = ()
    assert len(learner.show_results(2).axes) == 6  # no validation: training images


def test_confusion_metrics_values() -> None:
    cm = np.array([[6, 2], [1, 3]])  # rows truth, columns prediction
    m = confusion_metrics(cm, CODES)
    assert m["iou"]["crystal"] == pytest.approx(3 / 6)
    assert m["dice"]["crystal"] == pytest.approx(6 / 9)
    assert m["iou"]["background"] == pytest.approx(6 / 9)
    assert m["mean_iou"] == pytest.approx(0.5)
    assert m["foreground_iou"] == pytest.approx(0.5)  # two classes: the same
    cm3 = np.array([[10, 1, 1], [0, 5, 3], [2, 2, 6]])  # background, crystal, boundary
    m3 = confusion_metrics(cm3, (*CODES, "boundary"))
    assert m3["mean_iou"] == pytest.approx((5 / 11 + 6 / 14) / 2)
    assert m3["foreground_iou"] == pytest.approx(16 / 20)  # crystal<->boundary is foreground
    assert confusion_metrics(np.array([[4, 0], [0, 0]]), CODES)["iou"]["crystal"] is None


def test_default_init_falls_back_with_a_warning(data, caplog, tmp_path, monkeypatch) -> None:
    import crystalseg.models.checkpoint as ckpt

    monkeypatch.setattr(ckpt, "_DEFAULT_DIR", tmp_path / "no-model")  # a build without one
    with caplog.at_level(logging.WARNING):
        learner = unet_learner(data, encoder=TINY, decoder_channels=TINY_DEC, progress=False)
    assert learner.init_info["kind"] == "none"
    assert "no default model ships" in caplog.text


def test_finetune_maps_the_class_head_by_name(tmp_path: Path, data) -> None:
    spec3 = ModelSpec(TINY, ("background", "edge", "crystal"), decoder_channels=TINY_DEC)
    torch.manual_seed(0)
    model3 = build_model(spec3)
    save_checkpoint(tmp_path / "c3", model3, spec3, training={}, metrics=[], data_fingerprint="x")
    learner = unet_learner(data, init=tmp_path / "c3", progress=False)
    assert learner.spec.codes == tuple(CODES) and learner.spec.encoder == TINY
    head_w = next(k for k in model3.state_dict() if k.startswith("segmentation_head"))
    torch.testing.assert_close(
        learner.model.state_dict()[head_w], model3.state_dict()[head_w][[0, 2]]
    )
    with pytest.raises(ConfigError, match="resnet34"):
        unet_learner(data, encoder="resnet34", init=tmp_path / "c3")


def _bn_stats(model: nn.Module) -> list[torch.Tensor]:
    return [
        t.detach().clone()
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        for t in (m.running_mean, m.running_var)
    ]


def test_fine_tuning_keeps_the_batch_norm_statistics_unless_told_not_to(
    tmp_path: Path, data
) -> None:
    spec = ModelSpec(TINY, tuple(CODES), decoder_channels=TINY_DEC)
    torch.manual_seed(0)
    start = build_model(spec)
    save_checkpoint(tmp_path / "c", start, spec, training={}, metrics=[], data_fingerprint="x")
    before = _bn_stats(start)
    assert before, "the test encoder has batch-norm layers"
    for freeze, out in ((None, "kept"), (False, "learned")):
        learner = unet_learner(
            data, init=tmp_path / "c", progress=False, freeze_bn=freeze, min_steps_per_epoch=1
        )
        assert learner.freeze_bn is (freeze is None)  # the default when fine-tuning
        weights = [p.detach().clone() for p in learner.model.parameters()]
        learner.output_dir = tmp_path / out
        learner.fit_one_cycle(1, 1e-2)
        after = _bn_stats(learner.model)
        same = all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
        assert same is (freeze is None)
        # the weights (batch-norm scale and shift among them) train either way
        changed = [
            not torch.equal(w, p) for w, p in zip(weights, learner.model.parameters(), strict=True)
        ]
        assert sum(changed) > 0.5 * len(changed)
        meta = json.loads((tmp_path / out / "model.json").read_text())
        assert meta["training"]["freeze_bn"] is (freeze is None)
    # from random weights the statistics must be learned: off by default, refused if asked
    assert tiny(data).freeze_bn is False
    with pytest.raises(ConfigError, match="random"):
        tiny(data, freeze_bn=True)


def test_finetune_maps_a_rim_head_to_a_contact_head_by_role() -> None:
    rows = learner_mod._head_rows
    assert rows(("background", "crystal", "contact"), ("background", "crystal", "boundary")) == [
        0,
        1,
        2,
    ]
    assert rows(("background", "crystal", "boundary"), ("background", "edge", "crystal")) == [
        0,
        2,
        1,
    ]
    assert rows(("background", "crystal", "contact"), ("background", "crystal")) is None
    assert rows(("background", "needle"), ("background", "crystal", "boundary")) is None


def test_train_model_end_to_end(tmp_path: Path) -> None:
    folder = write_pairs(tmp_path / "d", n=4)
    settings = TrainSettings.from_flat(
        data=(folder,),
        codes="background,crystal",  # type: ignore[arg-type]
        output_dir=tmp_path / "out",
        encoder=TINY,
        decoder_channels=TINY_DEC,
        init="none",
        epochs=1,
        lr=1e-2,
        crop_size=64,
        batch_size=4,
        progress=False,
        min_steps_per_epoch=1,
    )
    result = train_model(settings)
    assert result.best_checkpoint == tmp_path / "out"
    assert len(result.history) == 1 and result.history[0]["iou"]["crystal"] is not None
    _, spec, _ = load_checkpoint(result.best_checkpoint)
    assert spec.codes == tuple(CODES)
    with pytest.raises(StageStateError, match="--resume"):
        train_model(settings)


@pytest.mark.parametrize(
    "kw",
    [
        {"codes": ("background",)},
        {"epochs": 0},
        {"crop_size": 100},
        {"lr": -1.0},
        {"loss": "l2"},
        {"valid_fraction": 1.5},
        {"data": ()},
        {"max_minutes": -1.0},
        {"freeze_bn": "yes"},
        {"freeze_bn": True, "init": "none"},
    ],
)
def test_train_settings_validation(tmp_path: Path, kw: dict) -> None:
    with pytest.raises(ConfigError):
        TrainSettings.from_flat(**{"data": (tmp_path,), **kw})


@pytest.mark.parametrize("codes", ["crystal,background", "boundary,crystal", "crystal,bg"])
def test_codes_must_start_with_the_background(tmp_path: Path, codes: str) -> None:
    """Mask value 0 is the first class: codes that put a crystal class first would
    train the background pixels as crystal (an inverted model)."""
    with pytest.raises(ConfigError, match=r"first class must be the background.*--codes back"):
        TrainSettings.from_flat(data=(tmp_path,), codes=codes)
    TrainSettings.from_flat(
        data=(tmp_path,), codes="medium,crystal"
    )  # any other name may come first


def test_train_model_resumes_an_interrupted_run(tmp_path: Path, data) -> None:
    part = tiny(data, output_dir=tmp_path / "run")
    part.fit_one_cycle(2, 5e-3, on_epoch_end=lambda rec: True)
    settings = TrainSettings.from_flat(
        data=(data.items[0].image.parent,),
        resume=tmp_path / "run",
        encoder=TINY,
        decoder_channels=TINY_DEC,
        init="none",
        epochs=2,
        crop_size=64,
        batch_size=4,
        seed=1,
        progress=False,
        min_steps_per_epoch=1,  # as the interrupted run (tiny)
    )
    result = train_model(settings)
    assert result.lr == 5e-3
    assert [h["epoch"] for h in result.history] == [1, 2]
    meta = json.loads((tmp_path / "run" / "last" / "model.json").read_text())
    assert meta["training"]["init"] == {"kind": "none"}
    assert meta["training"]["epochs_done"] == 2


def test_default_init_falls_back_to_local_imagenet_weights(tmp_path: Path, data, monkeypatch):
    from safetensors.torch import save_file

    import crystalseg.models.checkpoint as ckpt

    monkeypatch.setattr(ckpt, "_DEFAULT_DIR", tmp_path / "no-model")  # a build without one
    rgb = ModelSpec(
        TINY,
        tuple(CODES),
        in_channels=3,
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
        decoder_channels=TINY_DEC,
    )
    torch.manual_seed(7)
    weights = build_model(rgb).encoder.state_dict()
    save_file({k: v.contiguous() for k, v in weights.items()}, tmp_path / "in1k.safetensors")
    monkeypatch.setattr(ckpt, "find_imagenet_weights", lambda enc: tmp_path / "in1k.safetensors")
    monkeypatch.setattr(learner_mod, "find_imagenet_weights", ckpt.find_imagenet_weights)
    learner = unet_learner(data, encoder=TINY, decoder_channels=TINY_DEC, progress=False)
    assert learner.init_info["kind"] == "imagenet"
    assert learner.spec.mean == (pytest.approx(0.449, abs=1e-3),)
    key = list(weights)[-1]
    torch.testing.assert_close(learner.model.encoder.state_dict()[key], weights[key])


@pytest.mark.gpu
def test_cuda_mixed_precision_training_round_trips_to_cpu(tmp_path: Path, data) -> None:
    learner = tiny(data, device="cuda", output_dir=tmp_path / "gpu")
    history = learner.fit_one_cycle(2, 5e-3)
    assert learner.amp and all(np.isfinite(h["train_loss"]) for h in history)
    image = data.load(data.items[0])[0]
    on_cpu = unet_learner(data, init=tmp_path / "gpu", device="cpu", progress=False)
    agree = (on_cpu.predict(image) == learner.predict(image)).mean()
    assert agree > 0.99  # bf16/fp16 on the GPU against fp32 on the CPU


def test_instance_mask_files_train_with_boundaries_and_particle_f1(
    tmp_path: Path, monkeypatch
) -> None:
    """Cellpose-style files (X.png + X_masks.png holding one id per crystal): the
    class mask, boundary class included, comes from the labels; two touching crystals
    stay apart by their boundary; validation scores particle F1 against the labels,
    and a model that returns the true classes finds every crystal."""
    import tifffile

    from crystalseg.classes import class_mask_from_labels

    rng = np.random.default_rng(3)
    for i in range(4):
        labels = np.zeros((64, 64), np.uint16)
        labels[10:30, 10:30] = 1
        labels[10:30, 30:44] = 2  # touches crystal 1
        labels[40:56, 8 + i : 30 + i] = 3
        image = (200 - 80 * (labels > 0) + rng.normal(0, 4, labels.shape)).clip(0, 255)
        Image.fromarray(image.astype(np.uint8)).save(tmp_path / f"f{i}.png")
        tifffile.imwrite(tmp_path / f"f{i}_masks.tif", labels)
    data = pairs(tmp_path, codes=SYNTH_CODES, instances=True, crop_size=32, valid_fraction=0.5)
    item = data.valid_items[0]
    image, mask = data.load(item)
    truth = data.instance_truth(item)
    assert truth is not None and set(np.unique(truth)) == {0, 1, 2, 3}
    np.testing.assert_array_equal(mask, class_mask_from_labels(truth, SYNTH_CODES))
    assert (mask[10:30, 29:31] == 2).all()  # the contact of 1 and 2 is boundary
    assert data.summary()["mask_values"] == "instances"
    learner = tiny(data)
    masks = iter([data.load(item)[1] for item in data.valid_items])
    monkeypatch.setattr(learner, "segmenter", lambda: FixedEngine(lambda frame: next(masks)))
    assert learner.validate()["instance_f1"] > 0.95
    with pytest.raises(ConfigError, match="drop mask_values"):
        pairs(tmp_path, codes=SYNTH_CODES, instances=True, mask_values=(0, 1, 2))
    plain = pairs(tmp_path, codes=SYNTH_CODES, mask_values={0: 0, 1: 1, 2: 1, 3: 1})
    assert plain.fingerprint != data.fingerprint


def test_epoch_lines_are_printed_where_nothing_listens_to_the_log(data, capsys) -> None:
    """In a notebook or script (no logging configured) fit_one_cycle prints each epoch's
    line, as fastai does; where the log is handled (the CLI) it is only logged."""
    import logging

    logger = logging.getLogger("crystalseg")
    saved = logger.handlers[:], logger.level, logger.propagate
    logger.handlers[:], logger.propagate = [], False
    logger.setLevel(logging.WARNING)
    try:
        learner = tiny(data)
        learner.progress = True
        learner.fit_one_cycle(1, 1e-3)
        assert "epoch 1/1  train loss" in capsys.readouterr().out
        logger.addHandler(logging.NullHandler())
        logger.setLevel(logging.INFO)
        learner.fit_one_cycle(1, 1e-3)
        assert "train loss" not in capsys.readouterr().out
    finally:
        logger.handlers[:], logger.propagate = saved[0], saved[2]
        logger.setLevel(saved[1])
