"""Training settings: the groups validate themselves, flat keywords and the flat form
recorded in model.json (by this and earlier versions) map onto them."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crystalseg.errors import ConfigError
from crystalseg.models.checkpoint import default_checkpoint_path
from crystalseg.train import (
    DataSettings,
    LearnerSettings,
    ScheduleSettings,
    TrainSettings,
    pairs,
    unet_learner,
)
from crystalseg.train.settings import FLAT_FIELDS

#: The fields of the flat TrainSettings before the settings were grouped, in order.
OLD_FLAT = (
    "data", "codes", "output_dir", "encoder", "init", "epochs", "lr", "loss", "crop_size",
    "batch_size", "valid_fraction", "valid", "mask_values", "instances", "crops_per_image",
    "foreground_bias", "channels", "frame_step", "decoder_channels", "scaling", "augment",
    "find_lr", "resume", "early_stop", "max_minutes", "overwrite", "device", "seed",
    "weight_decay", "progress", "freeze_bn", "command",
)  # fmt: skip


@pytest.mark.parametrize(
    ("group", "name", "value", "choices"),
    [
        (LearnerSettings, "loss", "l2", "dice+ce, ce, dice"),
        (LearnerSettings, "augment", "heavy", "default, strong, strong-zoom"),
        (LearnerSettings, "scaling", "minmax", "dtype, percentile"),
        (LearnerSettings, "init", "imagnet", "default, imagenet, none"),
        (DataSettings, "channels", 2, "1, 3"),
    ],
)
def test_a_wrong_choice_is_one_line_naming_the_choices(group, name, value, choices) -> None:
    kw = {"paths": ("frames",)} if group is DataSettings else {}
    expected = rf"^{name} \(--{name}\) must be one of {re.escape(choices)}"
    with pytest.raises(ConfigError, match=expected) as e:
        group(**kw, **{name: value})
    assert "\n" not in str(e.value) and repr(value) in str(e.value)
    flat = {"data": ("frames",), name: value}
    with pytest.raises(ConfigError, match=rf"^{name} \(--{name}\) must be one of"):
        TrainSettings.from_flat(**flat)


@pytest.mark.parametrize(
    ("group", "kw", "match"),
    [
        (DataSettings, {"paths": ()}, "no training data"),
        (DataSettings, {"paths": "d", "crop_size": 100}, r"crop_size \(--crop-size\)"),
        (DataSettings, {"paths": "d", "valid_fraction": 1.0}, r"\[0, 1\)"),
        (DataSettings, {"paths": "d", "foreground_bias": 1.5}, "foreground_bias"),
        (DataSettings, {"paths": "d", "frame_step": 0}, "frame_step"),
        (DataSettings, {"paths": "d", "instances": True, "mask_values": (0, 255)}, "drop"),
        (DataSettings, {"paths": "d", "codes": "crystal,background"}, "first class"),
        (LearnerSettings, {"freeze_bn": True, "init": "none"}, "random here"),
        (LearnerSettings, {"decoder_channels": (16, 0)}, "positive widths"),
        (ScheduleSettings, {"epochs": 0}, "trains nothing"),
        (ScheduleSettings, {"epochs": 2.5}, "integer"),
        (ScheduleSettings, {"batch_size": 0}, "batch_size"),
        (ScheduleSettings, {"seed": -1}, "seed"),
        (ScheduleSettings, {"weight_decay": -0.1}, "weight_decay"),
    ],
)
def test_groups_refuse_bad_values(group, kw, match) -> None:
    with pytest.raises(ConfigError, match=match):
        group(**kw)


def test_groups_normalise_what_arrives() -> None:
    """What a notebook passes (a string, lists) is stored as the typed fields say."""
    data = DataSettings("frames", codes="background, crystal", valid=["a.png"])  # type: ignore[arg-type]
    assert data.paths == (Path("frames"),) and data.codes == ("background", "crystal")
    assert data.valid == ("a.png",)
    pair = DataSettings([("0.png", "0_mask.png"), "more"])  # type: ignore[arg-type]
    assert pair.paths == ((Path("0.png"), Path("0_mask.png")), Path("more"))
    widths = [16, 8]
    assert LearnerSettings(decoder_channels=widths).decoder_channels == (16, 8)  # type: ignore[arg-type]
    assert LearnerSettings(init=Path(".")).init == Path(".")
    with pytest.raises(ConfigError, match=r"must be a DataSettings.*from_flat"):
        TrainSettings(("frames",))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"unknown training setting.*epoch"):
        TrainSettings.from_flat(data=("d",), epoch=3)


def test_flat_keywords_build_the_groups_and_record_the_flat_form(tmp_path: Path) -> None:
    s = TrainSettings.from_flat(
        data=(tmp_path,), codes="background,crystal", init="none", epochs=5, lr=2e-3,
        crop_size=64, mask_values={0: "background", 255: "crystal"}, seed=3,
        output_dir=tmp_path / "out", augment="strong", freeze_bn=False,
    )  # fmt: skip
    assert s.data.crop_size == 64 and s.data.mask_values == {0: "background", 255: "crystal"}
    assert s.learner.init == "none" and s.learner.augment == "strong"
    assert s.schedule.epochs == 5 and s.schedule.lr == 2e-3 and s.schedule.seed == 3
    assert s.output_dir == tmp_path / "out"
    flat = s.to_dict()
    assert list(flat)[: len(OLD_FLAT)] == list(OLD_FLAT)  # the keys earlier code reads
    assert set(flat) == set(FLAT_FIELDS)
    assert flat["mask_values"] == {"0": "background", "255": "crystal"}
    json.dumps(flat)
    again = TrainSettings.from_dict(json.loads(json.dumps(flat)))
    assert again == s
    assert TrainSettings.from_dict(again.to_dict()).to_dict() == flat


def test_settings_recorded_before_the_groups_still_load() -> None:
    """The bundled model's model.json was written by the flat TrainSettings: its
    recorded settings read back into the groups, and record the same again."""
    meta = json.loads((default_checkpoint_path() / "model.json").read_text())
    recorded = meta["training"]["settings"]
    assert "learner" not in recorded and "instances" not in recorded  # the old form
    s = TrainSettings.from_dict(recorded)
    assert s.data.paths == (Path("exp13/B/runs"),) and s.data.frame_step == 6
    assert s.data.codes == ("background", "crystal", "boundary")
    assert s.learner.init == "none" and s.learner.scaling == "percentile"
    assert s.learner.augment == "strong" and s.learner.freeze_bn is False
    assert s.schedule.epochs == 30 and s.schedule.lr == 0.002 and s.schedule.batch_size == 8
    again = s.to_dict()
    assert {k: again[k] for k in recorded} == recorded


def test_an_old_flat_model_json_with_a_mapping_and_a_gone_path_loads(tmp_path: Path) -> None:
    recorded = {
        "data": [str(tmp_path / "gone")], "codes": ["background", "crystal"],
        "init": str(tmp_path / "gone-model"), "epochs": 4, "loss": "dice+ce",
        "mask_values": {"0": "background", "255": "crystal"}, "channels": 1,
        "resume": None, "seed": 0, "a_setting_of_another_version": 1,
    }  # fmt: skip
    s = TrainSettings.from_dict(recorded)
    assert s.learner.init == tmp_path / "gone-model"  # a path, though not here any more
    assert s.data.mask_values == {0: "background", 255: "crystal"}
    assert s.schedule.epochs == 4


def _write_pairs(folder: Path, n: int = 4) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir()
    for i in range(n):
        mask = np.zeros((64, 64), np.uint8)
        mask[10 + i : 30 + i, 20:40] = 255
        image = (60 + mask // 2 + rng.normal(0, 4, mask.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"{i}.png")
        Image.fromarray(mask).save(folder / f"{i}_mask.png")
    return folder


def test_pairs_takes_the_data_settings_whole_or_field_by_field(tmp_path: Path) -> None:
    folder = _write_pairs(tmp_path / "d")
    settings = DataSettings((folder,), crop_size=32, valid_fraction=0.25, crops_per_image=2)
    whole = pairs(settings, seed=1)
    loose = pairs(folder, crop_size=32, valid_fraction=0.25, crops_per_image=2, seed=1)
    assert whole.fingerprint == loose.fingerprint
    assert [i.name for i in whole.valid_items] == [i.name for i in loose.valid_items]
    assert whole.crops_per_image == loose.crops_per_image == 2
    assert pairs(settings, crop_size=64).crop_size == 64  # a field replaced
    with pytest.raises(ConfigError, match="crop_size"):
        pairs(folder, crop_size=33)


def test_unet_learner_takes_the_groups_whole_or_field_by_field(tmp_path: Path) -> None:
    data = pairs(_write_pairs(tmp_path / "d"), crop_size=32, seed=2)
    own = LearnerSettings(encoder="tu-test_resnet", init="none", decoder_channels=(8,) * 5)
    schedule = ScheduleSettings(device="cpu", batch_size=3, weight_decay=0.0, seed=5)
    whole = unet_learner(data, own, schedule, progress=False)
    assert (whole.batch_size, whole.weight_decay, whole.seed) == (3, 0.0, 5)
    assert whole.spec.decoder_channels == (8,) * 5 and not whole.freeze_bn
    loose = unet_learner(
        data, encoder="tu-test_resnet", init="none", decoder_channels=(8,) * 5, device="cpu"
    )
    assert loose.seed == data.seed == 2  # the data's seed without a schedule
    assert loose.batch_size == 8  # the CPU's default
    replaced = unet_learner(data, own, schedule, loss="dice", batch_size=2, progress=False)
    assert replaced.loss_name == "dice" and replaced.batch_size == 2
    assert replace(own, loss="dice").loss == "dice"
    with pytest.raises(ConfigError, match=r"unknown setting.*encoder"):
        unet_learner(data, encodr="resnet34")
