"""``crystalseg evaluate``: scores of a measurement against annotations, checked on
constructed frames whose errors are known, and end to end on annotated files."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import xarray as xr
from click.testing import CliRunner
from PIL import Image
from scipy import ndimage as ndi

from crystalseg.classes import class_mask_from_labels
from crystalseg.cli import cli
from crystalseg.errors import ConfigError, MaskValueError, RunFormatError
from crystalseg.evaluate import (
    FRAME_COLUMNS,
    Evaluation,
    _class_instances,
    evaluate_model,
    score_frame,
)
from crystalseg.measure import MeasureSettings
from crystalseg.measure.instances import matched_areas, outline_offsets
from crystalseg.store import consolidate
from crystalseg.synth import SynthConfig, synthesize_run

CODES3 = ("background", "crystal", "boundary")
#: No confidence filter: the constructed masks come with no probability anyway.
SETTINGS = MeasureSettings(min_confidence=None)


def discs(shape: tuple[int, int], centres: list[tuple[int, int]], radius: float) -> np.ndarray:
    """Instance labels of discs, 1..n in the order given."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int32)
    for k, (cy, cx) in enumerate(centres, start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = k
    return labels


CENTRES = [(30, 30), (30, 90), (30, 150), (100, 30), (100, 90), (100, 150)]


def test_a_perfect_mask_scores_perfectly() -> None:
    truth = discs((140, 190), CENTRES, 10)
    row = score_frame(class_mask_from_labels(truth, CODES3), truth, codes=CODES3, settings=SETTINGS)
    assert row["fg_iou"] == 1.0
    assert row["f1"] == row["precision"] == row["recall"] == 1.0
    assert row["n_true"] == row["n_measured"] == 6
    assert row["count_error"] == 0.0
    assert abs(row["d50_error"]) < 0.01
    assert abs(row["d50_true"] - 2 * math.sqrt(np.count_nonzero(truth == 1) / math.pi)) < 1e-9
    assert row["matched"] == 6
    assert abs(row["outline_offset_px"]) < 0.1


def test_outlines_one_pixel_too_large_give_an_offset_of_one_pixel() -> None:
    truth = discs((140, 190), CENTRES, 10)
    grown = discs((140, 190), CENTRES, 11)
    row = score_frame(class_mask_from_labels(grown, CODES3), truth, codes=CODES3, settings=SETTINGS)
    assert 0.85 < row["outline_offset_px"] < 1.15
    # ECD 2r: one pixel more radius is +10 % on the D50, the count is right
    assert row["d50_error"] == pytest.approx(0.1, abs=0.02)
    assert row["count_error"] == 0.0
    assert row["f1"] == 1.0
    assert 0.8 < row["fg_iou"] < 0.85  # (10/11)^2 = 0.826
    np.testing.assert_allclose(outline_offsets(truth, grown), row["outline_offset_px"], atol=0.15)
    m = matched_areas(truth, grown, truth_ids=np.array([2, 3]))
    np.testing.assert_array_equal(m["truth"], [2, 3])
    np.testing.assert_array_equal(m["label"], [2, 3])
    np.testing.assert_array_equal(m["true_area"], np.bincount(truth.ravel())[2:4])
    np.testing.assert_array_equal(m["area"], np.bincount(grown.ravel())[2:4])
    # a particle that misses its crystal by more than half matches nothing
    shifted = np.roll(truth, 15, axis=1)
    assert len(matched_areas(truth, shifted)["truth"]) == 0


def test_a_missed_crystal_and_a_false_one_show_in_count_recall_and_precision() -> None:
    truth = discs((140, 190), CENTRES, 10)
    pred = discs((140, 190), CENTRES[:5], 10)  # the sixth is missed
    row = score_frame(class_mask_from_labels(pred, CODES3), truth, codes=CODES3, settings=SETTINGS)
    assert row["n_true"] == 6 and row["n_measured"] == 5
    assert row["count_error"] == pytest.approx(-1 / 6)
    assert row["recall"] == pytest.approx(5 / 6) and row["precision"] == 1.0
    extra = discs((140, 190), [*CENTRES, (65, 175)], 10)  # one crystal that is not there
    row = score_frame(class_mask_from_labels(extra, CODES3), truth, codes=CODES3, settings=SETTINGS)
    assert row["count_error"] == pytest.approx(1 / 6)
    assert row["precision"] == pytest.approx(6 / 7) and row["recall"] == 1.0


def test_crystals_cut_by_the_frame_edge_count_on_neither_side() -> None:
    truth = discs((140, 190), [*CENTRES, (0, 60)], 10)  # the last is cut by the top edge
    row = score_frame(class_mask_from_labels(truth, CODES3), truth, codes=CODES3, settings=SETTINGS)
    assert row["n_true"] == row["n_measured"] == 6
    keep = MeasureSettings(min_confidence=None, edge="keep")
    row = score_frame(class_mask_from_labels(truth, CODES3), truth, codes=CODES3, settings=keep)
    assert row["n_true"] == row["n_measured"] == 7


def test_sizes_are_in_micrometres_with_a_pixel_size() -> None:
    truth = discs((140, 190), CENTRES, 10)
    mask = class_mask_from_labels(truth, CODES3)
    px = score_frame(mask, truth, codes=CODES3, settings=SETTINGS)
    um = score_frame(mask, truth, codes=CODES3, settings=SETTINGS, pixel_size_um=0.5)
    assert um["d50_true"] == pytest.approx(0.5 * px["d50_true"])
    assert um["d50_error"] == pytest.approx(px["d50_error"])


def test_annotated_class_masks_become_instances_split_along_their_boundary() -> None:
    # two squares touching along a column: one region without a boundary class,
    # two crystals where the annotation draws the boundary between them
    labels = np.zeros((40, 60), np.int32)
    labels[10:30, 10:30] = 1
    labels[10:30, 30:50] = 2
    two = (labels > 0).astype(np.uint8)
    assert _class_instances(two, ("background", "crystal")).max() == 1
    three = class_mask_from_labels(labels, CODES3)
    inst = _class_instances(three, CODES3)
    assert inst.max() == 2
    # the boundary pixels belong to the crystals: the areas are the annotated ones
    assert sorted(np.bincount(inst.ravel())[1:]) == [400, 400]


def test_evaluation_saves_json_and_csv_and_refuses_other_files(tmp_path: Path) -> None:
    frames = pd.DataFrame([dict.fromkeys(FRAME_COLUMNS, 1.0) | {"name": "a.png"}])
    ev = Evaluation(frames, {"frames": 1, "d50_error_mean": math.nan}, {"model": "m"})
    doc = json.loads(ev.save(tmp_path / "s.json").read_text())
    assert doc["summary"] == {"frames": 1, "d50_error_mean": None}
    assert doc["frames"][0]["name"] == "a.png"
    back = pd.read_csv(ev.save(tmp_path / "s.csv"))
    assert list(back.columns) == list(FRAME_COLUMNS)
    assert ev.save(tmp_path / "new" / "dir" / "s.csv").is_file()  # folders are made
    with pytest.raises(ConfigError, match=r"\.json"):
        ev.save(tmp_path / "s.xlsx")


@pytest.fixture(scope="module")
def annotated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A synthetic run (uncalibrated) and its frames as X.png / X_mask.png (0/255)."""
    tmp = tmp_path_factory.mktemp("annotated")
    run = synthesize_run(
        tmp / "clear.zarr",
        SynthConfig(frames=2, height=256, width=256, seed=5, scenario="mixed", calibrated=False),
    )
    pairs = tmp / "pairs"
    pairs.mkdir()
    ds = xr.open_zarr(run)
    labels = xr.open_zarr(run, group="truth")["labels"].values
    for t in range(2):
        Image.fromarray(ds["image"][t].values).save(pairs / f"{t}.png")
        # separated crystals only, so that a 0/255 class mask holds the same instances
        sep = np.where(ndi.grey_dilation(labels[t], size=3) != labels[t], 0, labels[t])
        Image.fromarray(np.where(sep > 0, 255, 0).astype(np.uint8)).save(pairs / f"{t}_mask.png")
        tifffile.imwrite(pairs.parent / f"{t}_labels.tif", sep.astype(np.uint16))
    return run, pairs


def test_the_bundled_model_on_annotated_files_and_on_the_run_agree(
    annotated: tuple[Path, Path],
) -> None:
    run, pairs = annotated
    on_files = evaluate_model(pairs, mask_values=(0, 255), device="cpu")
    assert list(on_files.frames["name"]) == ["0.png", "1.png"]
    assert on_files.frames["pixel_size_um"].isna().all()
    on_run = evaluate_model(run, device="cpu")
    # the same images and model: the same particles, whatever the annotation's form
    assert on_run.summary["frames"] == 2
    for ev in (on_files, on_run):
        assert ev.summary["fg_iou_pooled"] > 0.8
        assert ev.summary["f1_mean"] > 0.7
        assert ev.summary["matched_crystals"] >= 5
        assert ev.settings["measure_settings"]["min_confidence"] == 0.8
    np.testing.assert_array_equal(on_files.frames["n_measured"], on_run.frames["n_measured"])


def test_instance_label_masks_give_the_same_truth_as_class_masks(
    annotated: tuple[Path, Path],
) -> None:
    _, pairs = annotated
    as_labels = [(pairs / f"{t}.png", pairs.parent / f"{t}_labels.tif") for t in range(2)]
    by_ids = evaluate_model(as_labels, instances=True, device="cpu")
    by_class = evaluate_model(pairs, mask_values=(0, 255), device="cpu")
    np.testing.assert_array_equal(by_ids.frames["n_true"], by_class.frames["n_true"])
    np.testing.assert_allclose(by_ids.frames["d50_true"], by_class.frames["d50_true"])
    assert by_ids.settings["annotation"] == "instances"
    # a colour copy of an image measures as its grey original, sharpness filter and all
    grey = np.asarray(Image.open(pairs / "1.png"))
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(pairs.parent / "1rgb.png")
    sharp = MeasureSettings(min_sharpness=1e-4)
    rgb, mono = (
        evaluate_model([(pairs.parent / name, as_labels[1][1])], instances=True, settings=sharp)
        for name in ("1rgb.png", "pairs/1.png")
    )
    assert rgb.frames["n_true"][0] > 0
    np.testing.assert_array_equal(rgb.frames["n_true"], mono.frames["n_true"])
    np.testing.assert_array_equal(rgb.frames["n_measured"], mono.frames["n_measured"])


def test_bad_annotations_are_refused_with_what_to_fix(
    tmp_path: Path, annotated: tuple[Path, Path], store_mask: Callable[..., None]
) -> None:
    run, pairs = annotated
    floats = tmp_path / "f.tif"
    tifffile.imwrite(floats, np.full((256, 256), 0.5, np.float32))
    with pytest.raises(MaskValueError, match="non-integer"):
        evaluate_model([(pairs / "0.png", floats)], instances=True, device="cpu")
    with pytest.raises(MaskValueError, match="255"):
        evaluate_model(pairs, codes=CODES3, device="cpu")  # 0/255 are no indices of 3 classes
    negative = tmp_path / "n.tif"
    tifffile.imwrite(negative, np.full((256, 256), -1, np.int16))
    with pytest.raises(MaskValueError, match="negative"):
        evaluate_model([(pairs / "0.png", negative)], instances=True, device="cpu")
    binary = tmp_path / "b.png"  # a 0/255 class mask of two crystals read as instances
    two = np.zeros((256, 256), np.uint8)
    two[10:30, 10:30] = two[100:130, 50:90] = 255
    Image.fromarray(two).save(binary)
    with pytest.raises(MaskValueError, match=r"one id \(255\) over 2 separate.*--instances"):
        evaluate_model([(pairs / "0.png", binary)], instances=True, device="cpu")
    # a run whose only mask is a model's
    copy = tmp_path / "segmented.zarr"
    shutil.copytree(run, copy)
    truth_mask = xr.open_zarr(copy, group="truth")["mask"].values
    shutil.rmtree(copy / "truth")
    consolidate(copy)
    store_mask(copy, truth_mask)
    with pytest.raises(RunFormatError, match="no annotation"):
        evaluate_model(copy, device="cpu")


def test_cli_writes_scores_and_prints_a_summary(
    tmp_path: Path, annotated: tuple[Path, Path]
) -> None:
    _, pairs = annotated
    out = tmp_path / "scores.csv"
    result = CliRunner().invoke(
        cli, ["-q", "evaluate", str(pairs), "--mask-values", "0,255", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "particle F1" in result.output and "outline offset" in result.output
    table = pd.read_csv(out)
    assert list(table.columns) == list(FRAME_COLUMNS) and len(table) == 2
    assert (table["fg_iou"] > 0.7).all()
    bad = CliRunner().invoke(cli, ["-q", "evaluate", str(tmp_path / "nothing")])
    assert bad.exit_code != 0 and "does not exist" in bad.output
    scores = tmp_path / "half.json"
    half = CliRunner().invoke(
        cli,
        [
            "-q",
            "evaluate",
            str(pairs),
            "--mask-values",
            "0,255",
            "--resize",
            "0.5",
            "-o",
            str(scores),
            "--json",
        ],
    )
    assert half.exit_code == 0, half.output
    written = json.loads(scores.read_text())
    assert written["settings"]["resize"] == 0.5
    printed = json.loads(half.stdout)  # --json: the summary as one document on stdout
    assert printed["summary"] == written["summary"] and printed["output"] == str(scores)
    assert printed["settings"] == written["settings"] and printed["min_area"] is None
    # the default, auto, chooses one factor for the frames: 1 at the model's own scale
    auto = tmp_path / "auto.json"
    args = ["-q", "evaluate", str(pairs), "--mask-values", "0,255", "-o", str(auto)]
    assert CliRunner().invoke(cli, args).exit_code == 0
    recorded = json.loads(auto.read_text())["settings"]
    assert recorded["resize"] == 1.0 and recorded["resize_chosen_by"] == "auto"
    # which model was scored, on what: the bundled one here
    assert recorded["model_sha256"] and len(recorded["model_sha256"]) == 64
    assert recorded["model_checkpoint"].endswith("default")
    assert recorded["crystalseg_version"] and recorded["data"]
    for wild in ("10", "1,1", "half", "1,auto"):
        bad = CliRunner().invoke(cli, ["-q", "evaluate", str(pairs), "--resize", wild])
        assert bad.exit_code == 2 and "--resize" in bad.output, bad.output


def test_cli_compares_resize_factors(tmp_path: Path, annotated: tuple[Path, Path]) -> None:
    """--resize 1,0.5 scores the frames at both factors, one line each, names the
    best by F1 and writes both to one file; the factor-1 row equals a plain run."""
    _, pairs = annotated
    args = ["-q", "evaluate", str(pairs), "--mask-values", "0,255"]
    out = tmp_path / "cmp.csv"
    result = CliRunner().invoke(cli, [*args, "--resize", "1,0.5", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "scored at 2 resize factors" in result.output
    assert "best particle F1 at --resize " in result.output
    table = pd.read_csv(out)
    assert list(table.columns) == ["resize", *FRAME_COLUMNS]
    assert sorted(table["resize"].unique()) == [0.5, 1.0] and len(table) == 4
    plain = evaluate_model(pairs, mask_values=(0, 255), device="cpu").frames
    at_one = table[table["resize"] == 1.0].reset_index(drop=True)
    np.testing.assert_allclose(at_one["fg_iou"], plain["fg_iou"], atol=1e-9)
    doc = tmp_path / "cmp.json"
    printed = CliRunner().invoke(cli, [*args, "--resize", "1,0.5", "-o", str(doc), "--json"])
    assert printed.exit_code == 0, printed.output
    scores = json.loads(doc.read_text())["resize"]
    assert set(scores) == {"1", "0.5"} and scores["0.5"]["settings"]["resize"] == 0.5
    summary = json.loads(printed.stdout)
    assert {k: v["summary"] for k, v in summary["resize"].items()} == {
        k: v["summary"] for k, v in scores.items()
    }
    best = result.output.split("best particle F1 at --resize ")[1].split()[0]
    assert summary["best_resize"] == float(best)
