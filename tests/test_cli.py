"""The command line: exit codes, one-line errors, and that commands leave real results."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import xarray as xr
from click.testing import CliRunner
from PIL import Image

from crystalseg.classes import class_mask_from_labels
from crystalseg.cli import cli
from crystalseg.store import describe_run, open_run


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["-q", *args])
    return result.exit_code, result.output


def assert_one_line_error(code: int, output: str, *needles: str) -> None:
    assert code != 0
    lines = [line for line in output.strip().splitlines() if line]
    assert len(lines) == 1, output
    assert lines[0].startswith("Error: "), output
    assert "Traceback" not in output
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_import_tiff_then_info(tmp_path: Path, rng: np.random.Generator) -> None:
    frames = rng.integers(0, 4000, (7, 30, 40), dtype=np.uint16)
    tifffile.imwrite(
        tmp_path / "s.tif",
        frames,
        imagej=True,
        resolution=(2.0, 2.0),
        metadata={"unit": "um", "finterval": 3.0, "axes": "TYX"},
    )
    code, out = run("import", str(tmp_path / "s.tif"), str(tmp_path / "r.zarr"))
    assert code == 0, out
    ds = open_run(tmp_path / "r.zarr")
    np.testing.assert_array_equal(ds["image"].values, frames)
    np.testing.assert_allclose(ds["time"].values, np.arange(7) * 3.0)
    assert ds.attrs["pixel_size_um"] == 0.5
    assert "7 (chunks of" in out and "0.5 um" in out and "ImageJ finterval" in out

    code, out = run("info", str(tmp_path / "r.zarr"))
    assert code == 0 and "30 x 40 px" in out and "import       finished" in out


def test_import_overrides_and_folder_sort(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in (10, 2, 1):
        Image.fromarray(np.full((8, 9), i, np.uint8)).save(folder / f"frame{i}.png")
    code, out = run(
        "import", str(folder), str(tmp_path / "r.zarr"), "--interval", "5", "--pixel-size", "1.25"
    )
    assert code == 0, out
    ds = xr.open_zarr(tmp_path / "r.zarr")
    assert ds["image"].values[:, 0, 0].tolist() == [1, 2, 10]
    assert ds["time"].values.tolist() == [0.0, 5.0, 10.0]
    assert ds.attrs["pixel_size_um"] == 1.25


@pytest.mark.filterwarnings("always::crystalseg.errors.CrystalsegWarning")
def test_import_without_times_warns_and_assumes_one_second(tmp_path: Path) -> None:
    np.save(tmp_path / "s.npy", np.zeros((3, 4, 4), np.uint8))
    result = CliRunner().invoke(
        cli, ["-q", "import", str(tmp_path / "s.npy"), str(tmp_path / "r.zarr")]
    )
    assert result.exit_code == 0
    assert "--interval" in result.output
    assert describe_run(tmp_path / "r.zarr")["time_source"].startswith("assumed 1 s")


def test_bad_inputs_give_one_line_errors(tmp_path: Path) -> None:
    assert_one_line_error(
        *run("import", str(tmp_path / "missing.tif"), str(tmp_path / "r.zarr")), "missing.tif"
    )
    (tmp_path / "notes.tif").write_text("not an image")
    assert_one_line_error(*run("import", str(tmp_path / "notes.tif"), str(tmp_path / "r.zarr")))
    (tmp_path / "empty").mkdir()
    assert_one_line_error(*run("import", str(tmp_path / "empty"), str(tmp_path / "r.zarr")))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(mixed / "a1.png")
    Image.fromarray(np.zeros((9, 8), np.uint8)).save(mixed / "a2.png")
    assert_one_line_error(*run("import", str(mixed), str(tmp_path / "r.zarr")), "a2.png")
    np.save(tmp_path / "four.npy", np.zeros((2, 3, 5, 6), np.uint8))
    assert_one_line_error(*run("import", str(tmp_path / "four.npy"), str(tmp_path / "r.zarr")))
    assert_one_line_error(*run("info", str(tmp_path / "nothing.zarr")), "does not exist")
    assert_one_line_error(
        *run("import", str(tmp_path / "four.npy"), str(tmp_path / "r.zarr"), "--pixel-size", "-1")
    )
    # none of the failed imports left a store behind that looks complete
    assert not (tmp_path / "r.zarr").exists()


def test_existing_store_is_kept_without_overwrite(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.full((2, 4, 4), 7, np.uint8))
    np.save(tmp_path / "b.npy", np.full((3, 4, 4), 9, np.uint8))
    assert (
        run("import", str(tmp_path / "a.npy"), str(tmp_path / "r.zarr"), "--interval", "1")[0] == 0
    )
    code, out = run("import", str(tmp_path / "b.npy"), str(tmp_path / "r.zarr"), "--interval", "1")
    assert_one_line_error(code, out, "--overwrite")
    assert open_run(tmp_path / "r.zarr")["image"].values.max() == 7  # nothing lost
    code, _ = run(
        "import",
        str(tmp_path / "b.npy"),
        str(tmp_path / "r.zarr"),
        "--interval",
        "1",
        "--overwrite",
    )
    assert code == 0 and open_run(tmp_path / "r.zarr")["image"].values.max() == 9


def test_synth_writes_run_with_truth_and_pairs(tmp_path: Path) -> None:
    code, out = run(
        "synth",
        str(tmp_path / "s.zarr"),
        "--n-frames",
        "3",
        "--size",
        "96",
        "128",
        "--seed",
        "3",
        "--scenario",
        "clear",
        "--pairs",
        str(tmp_path / "pairs"),
    )
    assert code == 0, out
    ds = open_run(tmp_path / "s.zarr")
    assert ds["image"].shape == (3, 96, 128)
    truth = xr.open_zarr(tmp_path / "s.zarr", group="truth")
    assert truth["labels"].shape == (3, 96, 128)
    np.testing.assert_array_equal(truth["mask"].values > 0, truth["labels"].values > 0)
    assert sorted(p.name for p in (tmp_path / "pairs").iterdir())[:2] == ["0.png", "0_mask.png"]
    mask = np.asarray(Image.open(tmp_path / "pairs" / "0_mask.png"))
    np.testing.assert_array_equal(mask, truth["mask"][0].values)

    code, out = run(
        "synth",
        str(tmp_path / "b.zarr"),
        "--n-frames",
        "1",
        "--size",
        "96",
        "96",
        "--scenario",
        "crowded",
        "--pairs",
        str(tmp_path / "p3"),
        "--pairs-codes",
        "background,crystal,boundary",
    )
    assert code == 0, out
    labels = xr.open_zarr(tmp_path / "b.zarr", group="truth")["labels"][0].values
    mask3 = np.asarray(Image.open(tmp_path / "p3" / "0_mask.png"))
    np.testing.assert_array_equal(
        mask3, class_mask_from_labels(labels, ("background", "crystal", "boundary"))
    )


def test_synth_unknown_scenario(tmp_path: Path) -> None:
    assert_one_line_error(
        *run("synth", str(tmp_path / "s.zarr"), "--scenario", "crowdd"), "crowded"
    )


def _bmp_pairs(folder: Path, n: int, mask_value: int = 255) -> None:
    folder.mkdir()
    gen = np.random.default_rng(0)
    for i in range(n):
        img = np.full((64, 64), 180, np.uint8)
        mask = np.zeros((64, 64), np.uint8)
        y, x = gen.integers(8, 40, 2)
        img[y : y + 15, x : x + 20] = 90
        mask[y : y + 15, x : x + 20] = mask_value
        Image.fromarray(img).save(folder / f"{i}.bmp")
        Image.fromarray(mask).save(folder / f"{i}_mask.bmp")


def test_train_on_bmp_pairs_with_0_255_masks(tmp_path: Path) -> None:
    _bmp_pairs(tmp_path / "pairs", 5)
    code, out = run(
        "train",
        str(tmp_path / "pairs"),
        "--codes",
        "background,crystal",
        "--epochs",
        "2",
        "--max-minutes",
        "0.0001",
        "--crop-size",
        "64",
        "--batch-size",
        "4",
        "--init",
        "none",
        "--min-steps",
        "2",
        "-o",
        str(tmp_path / "model"),
    )
    assert code == 0, out
    assert "crystal IoU" in out and "best validation mean IoU" in out
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert meta["spec"]["codes"] == ["background", "crystal"]
    # the time budget stopped the 2-epoch schedule after its first epoch, on the record
    last = json.loads((tmp_path / "model" / "last" / "model.json").read_text())
    assert last["training"]["epochs_done"] == 1 and last["training"]["epochs"] == 2
    assert last["training"]["settings"]["max_minutes"] == 0.0001
    assert (tmp_path / "model" / "model.safetensors").stat().st_size > 100_000


def test_train_with_unmapped_mask_values_names_file_and_values(tmp_path: Path) -> None:
    _bmp_pairs(tmp_path / "pairs", 3)
    mask = np.asarray(Image.open(tmp_path / "pairs" / "1_mask.bmp")).copy()
    mask[0, 0] = 128
    Image.fromarray(mask).save(tmp_path / "pairs" / "1_mask.bmp")
    assert_one_line_error(
        *run(
            "train",
            str(tmp_path / "pairs"),
            "--codes",
            "background,crystal",
            "--epochs",
            "1",
            "--init",
            "none",
            "-o",
            str(tmp_path / "m"),
        ),
        "1_mask.bmp",
        "128",
        "--mask-values",
    )


def test_train_resume_takes_the_interrupted_runs_options(tmp_path: Path) -> None:
    """`train DATA -o DIR --resume` goes on with the options the interrupted run
    recorded (epochs, crop size, codes, mask values...) without repeating them."""
    _bmp_pairs(tmp_path / "pairs", 5)
    model = tmp_path / "model"
    code, out = run(
        "train", str(tmp_path / "pairs"), "--codes", "background,crystal", "--mask-values",
        "0,255", "--epochs", "3", "--max-minutes", "0.0001", "--crop-size", "64",
        "--batch-size", "4", "--init", "none", "--min-steps", "2", "-o", str(model),
    )  # fmt: skip
    assert code == 0, out
    last = json.loads((model / "last" / "model.json").read_text())["training"]
    assert last["epochs_done"] == 1 and last["epochs"] == 3
    code, out = run(
        "train", str(tmp_path / "pairs"), "-o", str(model), "--resume", "--max-minutes", "60"
    )
    assert code == 0, out
    last = json.loads((model / "last" / "model.json").read_text())["training"]
    assert last["epochs_done"] == 3 and last["settings"]["crop_size"] == 64
    assert last["settings"]["min_steps_per_epoch"] == 2  # taken from the interrupted run
    assert last["settings"]["codes"] == ["background", "crystal"]


def test_evaluating_a_model_on_its_own_training_frames_is_warned(tmp_path: Path) -> None:
    """Same data fingerprint as the checkpoint's: the scores would be optimistic."""
    from crystalseg.errors import CrystalsegWarning
    from crystalseg.evaluate import evaluate_model

    _bmp_pairs(tmp_path / "pairs", 4)
    model = tmp_path / "model"
    code, out = run(
        "train", str(tmp_path / "pairs"), "--codes", "background,crystal", "--mask-values",
        "0,255", "--epochs", "1", "--crop-size", "64", "--batch-size", "2", "--init", "none",
        "--min-steps", "2", "-o", str(model),
    )  # fmt: skip
    assert code == 0, out
    with pytest.warns(CrystalsegWarning, match="trained on these very frames"):
        evaluate_model(tmp_path / "pairs", model=model, mask_values=(0, 255), device="cpu")
    shutil.copytree(tmp_path / "pairs", tmp_path / "other")
    Image.fromarray(np.full((64, 64), 170, np.uint8)).save(tmp_path / "other" / "0.bmp")
    evaluate_model(tmp_path / "other", model=model, mask_values=(0, 255), device="cpu")


def test_train_on_instance_labels_keeps_the_rim_class_by_default(tmp_path: Path) -> None:
    """--instances without --codes trains the bundled model's three classes (the rim is
    drawn from the ids), so the model still splits touching crystals; the closing hint
    quotes a model path with a space."""
    folder = tmp_path / "cp"
    folder.mkdir()
    gen = np.random.default_rng(1)
    for i in range(4):
        img = np.full((64, 64), 180, np.uint8)
        labels = np.zeros((64, 64), np.uint16)
        for k, (y, x) in enumerate(gen.integers(4, 44, (2, 2)), start=1):
            img[y : y + 14, x : x + 16] = 90
            labels[y : y + 14, x : x + 16] = k
        Image.fromarray(img).save(folder / f"{i}.png")
        tifffile.imwrite(folder / f"{i}_masks.tif", labels)
    out_dir = tmp_path / "my model"
    code, out = run(
        "train", str(folder), "--instances", "--epochs", "1", "--crop-size", "64",
        "--batch-size", "2", "--init", "none", "--min-steps", "2", "-o", str(out_dir),
    )  # fmt: skip
    assert code == 0, out
    meta = json.loads((out_dir / "model.json").read_text())
    assert meta["spec"]["codes"] == ["background", "crystal", "boundary"]
    assert f"--model '{out_dir}'" in out


def test_measure_stream_flag_gives_the_same_results(tmp_path: Path) -> None:
    """--stream (overlap measuring with inference) and --no-stream write the same PSD."""
    results = []
    for flag in ("--stream", "--no-stream"):
        path = tmp_path / f"run{flag}.zarr"
        code, out = run("synth", str(path), "--n-frames", "4", "--size", "96", "96", "--seed", "3")
        assert code == 0, out
        code, out = run("measure", str(path), flag)
        assert code == 0, out
        results.append(xr.open_zarr(path, group="psd").load())
    a, b = results
    np.testing.assert_array_equal(a["count_kept"].values, b["count_kept"].values)
    np.testing.assert_allclose(a["q0"].values, b["q0"].values, equal_nan=True)


def test_measure_tta_segments_with_test_time_augmentation(tmp_path: Path) -> None:
    """measure --tta on a run with no mask makes the mask with TTA, and says so in the store."""
    from crystalseg.store import stage_info

    path = tmp_path / "run.zarr"
    code, out = run("synth", str(path), "--n-frames", "2", "--size", "64", "64", "--seed", "4")
    assert code == 0, out
    code, out = run("measure", str(path), "--tta", "--no-stream")
    assert code == 0, out
    assert stage_info(path)["segment"]["settings"]["tta"] is True
    # a plain segmentation of the same run is a different mask setting
    code, out = run("segment", str(path))
    assert_one_line_error(code, out, "other settings (tta)", "--overwrite")


def test_measure_resize_segments_at_that_factor(tmp_path: Path) -> None:
    """measure --resize on a run with no mask makes the mask at that factor and records it."""
    from crystalseg.store import stage_info

    path = tmp_path / "run.zarr"
    code, out = run("synth", str(path), "--n-frames", "2", "--size", "64", "64", "--seed", "4")
    assert code == 0, out
    code, out = run("measure", str(path), "--resize", "0.5", "--no-stream")
    assert code == 0, out
    assert stage_info(path)["segment"]["settings"]["resize"] == 0.5
    mask = xr.open_zarr(path)["mask"]
    assert mask.shape == (2, 64, 64)
    code, out = run("info", str(path))
    assert code == 0 and "resize 0.5)" in out, out


def test_resize_takes_a_factor_or_auto(tmp_path: Path) -> None:
    """--resize auto (the default) keeps 1 on a synthetic run, the model's own scale, so
    its mask is the plain one; a bad factor is a usage error that names 'auto'."""
    from crystalseg.store import stage_info

    path = tmp_path / "run.zarr"
    code, out = run("synth", str(path), "--n-frames", "3", "--size", "160", "160", "--seed", "21")
    assert code == 0, out
    code, out = run("segment", str(path), "--resize", "auto")
    assert code == 0 and "shrunk" not in out, out
    assert "resize" not in stage_info(path)["segment"]["settings"]
    code, out = run("segment", str(path), "--resize", "1")  # the same mask setting
    assert code == 0, out
    for bad in ("0", "big", "5"):
        code, out = run("segment", str(path), "--resize", bad)
        assert code == 2 and "'auto'" in out, out


def test_measure_engine_options_load_no_model_when_the_run_has_a_mask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_mask
) -> None:
    """--tta and --resize do not redo an existing mask: it is measured, with a note."""
    import crystalseg.segment

    path = tmp_path / "run.zarr"
    code, out = run("synth", str(path), "--n-frames", "2", "--size", "64", "64", "--seed", "4")
    assert code == 0, out
    store_mask(path, np.asarray(xr.open_zarr(path, group="truth")["labels"].values > 0, np.uint8))

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded for a run that has a mask")

    monkeypatch.setattr(crystalseg.segment, "load_segmenter", no_model)
    code, out = run("measure", str(path), "--tta", "--resize", "0.5", "--no-stream")
    assert code == 0, out
    assert "already has a mask" in out and "--tta, --resize" in out and "--overwrite" in out


def test_training_summary_names_the_score_that_picked_the_best_epoch() -> None:
    from types import SimpleNamespace

    from crystalseg.summary import format_training

    def summary(history, best):
        return format_training(
            SimpleNamespace(history=history, best_score=best, best_checkpoint=None)
        )

    valid = {
        "epoch": 1,
        "train_loss": 0.5,
        "valid_loss": 0.4,
        "iou": {"crystal": 0.8},
        "mean_iou": 0.8,
    }
    assert "best validation mean IoU of the crystal classes 0.8000" in summary([valid], 0.8)
    f1 = summary([{**valid, "instance_f1": 0.7}], 0.7)
    assert "best validation particle F1 0.7000" in f1
    # no validation frames: the kept epoch has the lowest training loss, shown as a loss
    text = summary([{"epoch": 1, "train_loss": 0.25}], -0.25)
    assert "best training loss 0.2500" in text and "IoU" not in text


def test_epoch_line_is_the_same_in_the_log_and_the_summary() -> None:
    from crystalseg.train.learner import format_epoch

    record = {
        "epoch": 2,
        "train_loss": 0.5,
        "valid_loss": 0.4,
        "foreground_iou": 0.85,
        "iou": {"background": 0.99, "crystal": 0.8, "boundary": None},
        "dice": {"background": 0.995, "crystal": 0.9, "boundary": None},
        "instance_f1": 0.7,
        "seconds": 12.4,
    }
    line = format_epoch(record, 3)
    assert line == (
        "epoch 2/3  train loss 0.5000  valid loss 0.4000  foreground IoU 0.850  "
        "crystal IoU 0.800 Dice 0.900  particle F1 0.700  12 s"
    )
    assert format_epoch(record).replace("epoch   2", "epoch 2/3") == line


def test_measure_counts_a_needle_behind_another_once_unless_told_not_to(
    tmp_path: Path, store_mask
) -> None:
    """Every frame: a needle crossed by another in front of it, so seen in two pieces.
    measure joins the pieces (2 particles a frame); --no-join-occluded counts 3."""
    from crystalseg.store import read_table, stage_info

    path = tmp_path / "run.zarr"
    code, out = run("synth", str(path), "--n-frames", "2", "--size", "160", "160", "--seed", "5")
    assert code == 0, out
    codes = ("background", "crystal", "boundary")
    truth = np.zeros((160, 160), np.int32)
    truth[78:84, 20:140] = 1  # the needle behind
    truth[30:130, 76:84] = 2  # the one in front
    store_mask(path, np.stack([class_mask_from_labels(truth, codes)] * 2), codes=codes)
    for flags, count in (((), 2), (("--no-join-occluded", "--overwrite"), 3)):
        code, out = run("measure", str(path), "--edge", "keep", "--no-stream", *flags)
        assert code == 0, out
        particles = read_table(path, "particles")
        assert particles.groupby("frame").size().tolist() == [count, count]
        settings = stage_info(path)["measure"]["settings"]["measure"]
        assert settings["join_occluded"] is (count == 2)
    # joined: the long particle spans both pieces (120 px), less the crossing needle
    code, out = run("measure", str(path), "--edge", "keep", "--no-stream", "--overwrite")
    assert code == 0, out
    longest = read_table(path, "particles").query("frame == 0")["feret_diameter_max"].max()
    pixel = open_run(path).attrs.get("pixel_size_um", 1.0)
    assert longest == pytest.approx(120 * pixel, rel=0.02)


def test_measure_window_and_min_count(tmp_path: Path, store_mask) -> None:
    """--window pools frames into group psd_window; --min-count sets the D-value floor; a
    window that is no length is one Error line."""
    path = tmp_path / "run.zarr"
    assert run("synth", str(path), "--n-frames", "3", "--size", "96", "96", "--seed", "5")[0] == 0
    truth = np.zeros((96, 96), np.int32)
    truth[20:30, 20:30], truth[50:60, 40:52] = 1, 2
    store_mask(path, np.stack([truth > 0] * 3).astype(np.uint8))
    code, out = run("measure", str(path), "--window", "2", "--min-count", "3", "--no-stream")
    assert code == 0, out
    assert "windows      2 -> xarray.open_zarr(RUN, group='psd_window')" in out
    assert "3 of 3 frames with particles hold fewer than 3 counted" in out
    with xr.open_zarr(path, group="psd_window") as win:
        assert win["count_kept"].values.tolist() == [4, 2]
        assert win["below_min_count"].values.tolist() == [False, True]
    code, out = run("measure", str(path), "--window", "five", "--overwrite")
    assert code == 1 and out.startswith("Error: window 'five' is not a time"), out


def test_measure_trims_a_rim_drawn_two_pixels_wide_unless_told_not_to(
    tmp_path: Path, store_mask
) -> None:
    """A mask whose boundary class lies one pixel outside every crystal too (as the
    default model draws it): measure trims it back to the true areas; with
    --no-trim-boundary each particle keeps the extra ring, and the store says which."""
    from scipy import ndimage as ndi

    from crystalseg.store import read_table, stage_info

    path = tmp_path / "run.zarr"
    code, out = run("synth", str(path), "--n-frames", "2", "--size", "160", "160", "--seed", "5")
    assert code == 0, out
    codes = ("background", "crystal", "boundary")
    labels = xr.open_zarr(path, group="truth")["labels"].values
    mask = np.stack([class_mask_from_labels(lab, codes) for lab in labels])
    ring = np.stack([ndi.binary_dilation(lab > 0, np.ones((3, 3), bool)) for lab in labels])
    mask[ring & (labels == 0)] = 2
    store_mask(path, mask, codes=codes)

    areas = {}
    for flags in ((), ("--no-trim-boundary", "--overwrite")):
        code, out = run("measure", str(path), "--edge", "keep", "--no-stream", *flags)
        assert code == 0, out
        particles = read_table(path, "particles")
        areas[flags] = particles["area"].sum()
        trimmed = not flags
        assert stage_info(path)["measure"]["settings"]["measure"]["trim_boundary"] is trimmed
    true_area = np.count_nonzero(labels) * open_run(path).attrs.get("pixel_size_um", 1.0) ** 2
    drawn = areas[("--no-trim-boundary", "--overwrite")]
    assert drawn > 1.15 * true_area
    # Most of the ring goes (what stays: where staircase outlines step diagonally,
    # and small crystals, which trimming would take too much of).
    assert true_area <= areas[()] < true_area + 0.5 * (drawn - true_area)


def test_calibrate_sets_pixel_size_and_interval_and_measure_redoes_only_the_measurement(
    tmp_path: Path, store_mask
) -> None:
    """A run imported without calibration gets one afterwards: the mask stays, the old
    results are out of date (info, warning) and measure redoes them in micrometres and
    seconds without --overwrite; bad input is a one-line error that changes nothing."""
    from crystalseg.errors import CrystalsegWarning
    from crystalseg.viz import open_results

    frames = np.full((3, 64, 64), 200, np.uint8)
    yy, xx = np.mgrid[:64, :64]
    disc = (yy - 30) ** 2 + (xx - 32) ** 2 <= 10**2
    frames[:, disc] = 40
    np.save(tmp_path / "s.npy", frames)
    path = tmp_path / "r.zarr"
    assert run("import", str(tmp_path / "s.npy"), str(path), "--interval", "1")[0] == 0
    store_mask(path, np.broadcast_to(disc, frames.shape).astype(np.uint8))
    code, out = run("measure", str(path))
    assert code == 0, out
    ecd_px = float(open_results(path)[1]["ecd"].iloc[0])
    assert ecd_px == pytest.approx(2 * np.sqrt(disc.sum() / np.pi))
    mask_before = open_run(path)["mask"].values

    for bad, needle in (([], "nothing to set"), (["--pixel-size", "-1"], "--pixel-size")):
        code, out = run("calibrate", str(path), *bad)
        assert_one_line_error(code, out, needle)
    assert describe_run(path)["pixel_size_um"] is None

    code, out = run("calibrate", str(path), "--pixel-size", "0.5", "--interval", "30")
    assert code == 0, out
    assert "OUT OF DATE: the pixel size and frame times changed" in out
    assert f"crystalseg measure {path}" in out
    with pytest.warns(CrystalsegWarning, match="out of date"):
        open_results(path)
    code, out = run("measure", str(path))  # no --overwrite needed, no segmenting
    assert code == 0, out
    psd, particles = open_results(path)
    assert float(particles["ecd"].iloc[0]) == pytest.approx(0.5 * ecd_px)
    np.testing.assert_allclose(psd["time"].values, [0.0, 30.0, 60.0])
    np.testing.assert_array_equal(open_run(path)["mask"].values, mask_before)
    assert describe_run(path)["pixel_size_um"] == 0.5
    code, out = run("info", str(path), "--json")
    assert code == 0 and json.loads(out)["measure_outdated"] is None
    assert run("measure", str(path))[0] == 0  # measured: nothing to do


def test_measure_and_segment_option_errors_name_the_options(tmp_path: Path) -> None:
    """Bad --bins, --min-area and --tile-size are usage errors (exit 2) in the options'
    own words, before any work."""
    path = tmp_path / "r.zarr"
    assert run("synth", str(path), "--n-frames", "1", "--size", "64", "64")[0] == 0
    for args, needle in (
        (["measure", str(path), "--bins", "0", "100", "10"], "--bins 1 1000 60"),
        (["measure", str(path), "--bins", "1", "1000", "0"], "'--bins'"),
        (["measure", str(path), "--min-area", "-5"], "'--min-area'"),
        (["segment", str(path), "--tile-size", "10"], "'--tile-size'"),
    ):
        code, out = run(*args)
        assert code == 2 and needle in out, out
    assert "mask" not in describe_run(path)["arrays"]


def test_ctrl_c_exits_130_and_says_the_work_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import crystalseg.importing

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(crystalseg.importing, "import_run", interrupted)
    np.save(tmp_path / "s.npy", np.zeros((2, 8, 8), np.uint8))
    result = CliRunner().invoke(cli, ["import", str(tmp_path / "s.npy"), str(tmp_path / "r.zarr")])
    assert result.exit_code == 130
    assert "Interrupted" in result.output and "go on from there" in result.output
