"""Short plain-text summaries of a run store for the terminal."""

from __future__ import annotations

import shlex
from typing import Any

from crystalseg.store.ome import LABELS_GROUP, X_UM, Y_UM


def counted(n: int, noun: str) -> str:
    """``1 warning``, ``2 warnings``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def format_duration(seconds: float) -> str:
    """A length of time for people: ``90 s``, ``12.5 min``, ``3.25 h``."""
    if seconds < 120:
        return f"{seconds:g} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _engine_note(stage: dict[str, Any]) -> str:
    """`` (model 1a2b3c4d5e6f, tta, resize 0.5, int8)`` for a segment stage, else ``""``."""
    settings = stage.get("settings") or {}
    notes = []
    if settings.get("model_sha256"):
        notes.append(f"model {str(settings['model_sha256'])[:12]}")
    if settings.get("tta"):
        notes.append("tta")
    if settings.get("resize", 1.0) != 1.0:
        notes.append(f"resize {settings['resize']:g}")
    if (stage.get("engine") or {}).get("precision") == "int8":
        notes.append("int8")
    return f" ({', '.join(notes)})" if notes else ""


def format_run_info(info: dict[str, Any]) -> str:
    """Text of ``crystalseg info`` from :func:`crystalseg.store.describe_run`'s dict."""
    lines = [info["path"]]
    lines.append(f"  frames       {info['frames']} (chunks of {info['frames_per_chunk']})")
    lines.append(
        f"  frame size   {info['height_px']} x {info['width_px']} px (y x), {info['dtype']}"
    )
    if info["frames"] > 1:
        span = info["time_end_s"] - info["time_start_s"]
        lines.append(
            f"  time         {info['time_start_s']:g} to {info['time_end_s']:g} s "
            f"({format_duration(span)}), median interval {info['median_interval_s']:g} s; "
            f"from {info['time_source']}"
        )
    else:
        lines.append(f"  time         one frame; from {info['time_source']}")
    if info["pixel_size_um"] is None:
        lines.append(
            "  pixel size   unknown: sizes are reported in px (set it with "
            f"crystalseg calibrate {info['path']} --pixel-size UM)"
        )
    else:
        fy, fx = info["field_um"]
        lines.append(f"  pixel size   {info['pixel_size_um']:g} um (field {fy:.0f} x {fx:.0f} um)")
    source = info["source"]
    if isinstance(source, dict) and source.get("description"):
        lines.append(f"  source       {source['description']}")
    if info["stages"]:
        for name, stage in info["stages"].items():
            status = stage.get("status", "?")
            if status == "finished":
                text = f"finished {stage.get('finished', '')}" + _engine_note(stage)
                if name == "measure" and info.get("measure_outdated"):
                    text += (
                        f"; OUT OF DATE: {info['measure_outdated']} "
                        f"(run crystalseg measure {info['path']})"
                    )
            elif name.endswith(".next"):  # a replacement of finished results
                text = (
                    f"REPLACEMENT INTERRUPTED ({stage.get('frames_done', 0)} of "
                    f"{stage.get('frames_total', '?')} frames); the finished results stay in "
                    "place until it completes: rerun the same command to finish it"
                )
            else:
                text = (
                    f"INCOMPLETE ({stage.get('frames_done', 0)} of "
                    f"{stage.get('frames_total', '?')} frames); rerun to resume"
                )
            lines.append(f"  {name:<12} {text}")
    for stage in ("segment", "measure"):
        if stage not in info["stages"]:
            lines.append(f"  {stage:<12} not run")
    # what the frames' metadata adds (coordinates, the OME-Zarr label image) is not content
    extra = [a for a in info["arrays"] if a not in ("image", "time", Y_UM, X_UM)] + [
        g for g in info["groups"] if g != LABELS_GROUP
    ]
    if extra:
        lines.append(f"  contents     {', '.join(extra)}")
    ratio = info["compression_ratio"]
    lines.append(
        f"  on disk      {_bytes(info['bytes_on_disk'])}"
        + (f" (compression {ratio:.2f}x)" if ratio else "")
    )
    return "\n".join(lines)


def format_training(result: Any) -> str:
    """Text printed after ``crystalseg train``: per-epoch validation and where the model is."""
    from crystalseg.train.learner import epoch_score, format_epoch

    lines = [format_epoch(record) for record in result.history]
    best = result.best_score
    if best is not None and result.history:
        # name the score of the epoch that was kept, by the rule that kept it
        what = next(
            (n for v, n in map(epoch_score, result.history) if v == best), "validation score"
        )
        if what == "training loss":  # no validation frames: minus the loss was ranked
            lines.append(f"best training loss {-best:.4f} (no validation frames)")
        else:
            lines.append(f"best {what} {best:.4f}")
    learner = getattr(result, "learner", None)
    for sentence in getattr(learner, "worse_than_start", None) or ():
        lines.append(f"WARNING: {sentence}")
    calibration = getattr(learner, "calibration", None)
    if calibration is not None:
        lines.append(f"probabilities calibrated: {calibration.describe()}")
    if result.best_checkpoint is not None:
        lines.append(
            f"model written to {result.best_checkpoint} (last epoch: {result.last_checkpoint})"
        )
        model = shlex.quote(str(result.best_checkpoint))
        lines.append(f"use it with: crystalseg segment RUN --model {model}")
    return "\n".join(lines)


def resize_note(factor: float) -> str:
    """The line that says a run was segmented on resized frames."""
    return (
        f"  resize       frames shrunk by {factor:g} before the model (for crystals larger in "
        "pixels than it knows; undo: crystalseg segment RUN --resize 1 --overwrite)"
        if factor < 1
        else f"  resize       frames enlarged by {factor:g} before the model"
    )


def format_measurement(summary: dict[str, Any], exported: Any = None) -> str:
    """Text printed after ``crystalseg measure`` from ``summarize_measurement``'s dict."""
    units = summary.get("size_units") or "px"
    size = summary.get("size_column") or "ecd"
    excluded = summary.get("excluded") or {}
    n_excluded = sum(excluded.values())
    why = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in excluded.items() if n)
    lines = [
        summary["path"],
        f"  frames       {summary['frames']}",
        f"  particles    {summary['particles']} found = {summary['particles_counted']} counted "
        f"+ {n_excluded} excluded" + (f" ({why})" if why else ""),
    ]
    for when in ("start", "end"):
        d50 = summary[f"d50_{when}"]
        if d50 == d50:  # not NaN
            lower = summary.get(f"d50_{when}_lower", float("nan"))
            upper = summary.get(f"d50_{when}_upper", float("nan"))
            interval = (
                f", 95 % {lower:.3g}-{upper:.3g}" if lower == lower and upper == upper else ""
            )
            lines.append(
                f"  D50 {when:<5}    {d50:.3g} {units} ({size}, number basis{interval}) at "
                f"t = {summary[f'time_{when}_s']:g} s, n = {summary[f'count_{when}']}"
            )
        else:
            lines.append(f"  D50 {when:<5}    no frame with enough counted particles")
    below = summary.get("frames_below_min_count") or 0
    if below:
        window = summary.get("suggested_window")
        advice = f"; pool frames with --window {window}" if window else ""
        if summary.get("windows"):  # pooled already: say where, and whether wider helps
            advice = "; the pooled windows below hold them" + (
                f" (or pool wider: --window {window})" if window else ""
            )
        lines.append(
            f"  warning      {below} of {summary.get('frames_with_particles')} frames with "
            f"particles hold fewer than {summary.get('min_count')} counted: no D-values "
            f"there{advice}"
        )
    if summary.get("windows"):
        lines.append(
            f"  windows      {summary['windows']} -> xarray.open_zarr(RUN, group='psd_window')"
        )
    if summary.get("segment_resize", 1.0) != 1.0:
        lines.append(resize_note(summary["segment_resize"]))
    lines.append(f"  PSD          {summary['psd']}  -> xarray.open_zarr(RUN, group='psd')")
    lines.append(f"  particles    {summary['particles_table']}")
    if exported is not None:
        lines.append(f"  exported     {exported}")
    return "\n".join(lines)


def _pct(x: float | None, sign: str = "") -> str:
    return "n/a" if x is None else f"{100 * x:{sign}.1f} %"


def format_evaluation(result: Any, written: Any = None) -> str:
    """Text printed after ``crystalseg evaluate`` (an :class:`~crystalseg.evaluate.Evaluation`)."""
    s = result.summary
    frames = result.frames
    lines = [f"{s['frames']} annotated frames, {s['matched_crystals']} crystals matched"]
    factor = result.settings.get("resize", 1.0)
    if isinstance(factor, int | float) and factor != 1.0:
        how = " (chosen by --resize auto)" if result.settings.get("resize_chosen_by") else ""
        lines.append(f"  resize           {factor:g}{how}: frames resized before the model")
    if s["fg_iou_pooled"] is not None:
        lines.append(f"  foreground IoU   {s['fg_iou_pooled']:.3f} (pooled over frames)")
    if s["f1_mean"] is not None:
        lines.append(
            f"  particle F1      {s['f1_mean']:.3f} (precision {s['precision_mean']:.3f}, "
            f"recall {s['recall_mean']:.3f}; IoU >= 0.5)"
        )
    lines.append(
        f"  count error      median |e| {_pct(s['count_error_median_abs'])}, "
        f"mean {_pct(s['count_error_mean'], '+')}"
    )
    lines.append(
        f"  D50 error        median |e| {_pct(s['d50_error_median_abs'])}, "
        f"mean {_pct(s['d50_error_mean'], '+')} (number basis, ECD)"
    )
    if s["frames_within_bars"] is not None:
        lines.append(
            f"  within bars      {_pct(s['frames_within_bars'])} of frames (count within 10 % "
            "and D50 within 5 %)"
        )
    offset = s["outline_offset_px"]
    if offset is not None:
        um = f" = {s['outline_offset_um']:+.3g} um" if "outline_offset_um" in s else ""
        hint = ""
        if abs(offset) >= 0.5:
            hint = (
                " -- outlines drawn too "
                + ("large" if offset > 0 else "small")
                + "; fine-tune on these frames (crystalseg train) to teach the model "
                "your annotation"
            )
        lines.append(f"  outline offset   {offset:+.2f} px{um} (+: particles too large){hint}")
    worst = frames.assign(e=frames["d50_error"].abs()).dropna(subset=["e"])
    if len(worst) > 1:
        row = worst.loc[worst["e"].idxmax()]
        lines.append(
            f"  worst D50        {row['name']}: {100 * row['d50_error']:+.1f} % "
            f"({row['n_measured']:g} counted, {row['n_true']:g} annotated)"
        )
    if result.baseline is not None:
        lines.append(_format_baseline(result))
    if written is not None:
        lines.append(f"  scores           {written}")
    return "\n".join(lines)


def _format_baseline(result: Any) -> str:
    """The model beside its baseline on the same frames, and what it measures worse."""
    table = result.comparison()
    base = result.settings.get("baseline", "baseline")
    lines = [
        f"  beside {base} on the same frames:",
        "    model     F1 (pooled)  count |e|  D50 |e|  IoU",
    ]

    def num(v: Any) -> str:
        return "-" if v is None or v != v else f"{v:.3f}"

    for name in ("model", "baseline"):
        row = table.loc[name]
        lines.append(
            f"    {name:<9} {num(row['f1_pooled']):>11}  {_pct(row['count_error_median_abs']):>9}"
            f"  {_pct(row['d50_error_median_abs']):>7}  {num(row['fg_iou_pooled'])}"
        )
    for sentence in result.verdicts:
        lines.append(f"  WARNING: {sentence}")
    return "\n".join(lines)


def format_resize_comparison(results: Any, written: Any = None) -> str:
    """Text printed after ``crystalseg evaluate --resize F1,F2,...``: one line per factor
    (a mapping factor -> :class:`~crystalseg.evaluate.Evaluation`) and the best one."""
    first = next(iter(results.values())).summary
    lines = [
        f"{first['frames']} annotated frames, scored at {len(results)} resize factors",
        "  resize  fg IoU  particle F1  count |e|  D50 |e|  outline offset",
    ]
    for factor, result in results.items():
        s = result.summary
        iou = "n/a" if s["fg_iou_pooled"] is None else f"{s['fg_iou_pooled']:.3f}"
        f1 = "n/a" if s["f1_mean"] is None else f"{s['f1_mean']:.3f}"
        offset = s["outline_offset_px"]
        off = "n/a" if offset is None else f"{offset:+.2f} px"
        lines.append(
            f"  {factor:<6g}  {iou:<6}  {f1:<11}  {_pct(s['count_error_median_abs']):<9}  "
            f"{_pct(s['d50_error_median_abs']):<7}  {off}"
        )
    from crystalseg.evaluate import best_resize_factor

    best = best_resize_factor(results)
    if best is not None:
        lines.append(f"  best particle F1 at --resize {best:g}")
    if written is not None:
        lines.append(f"  scores           {written}")
    return "\n".join(lines)


def format_queue(documents: list[dict[str, Any]]) -> str:
    """The table printed after several runs (``crystalseg measure A.zarr B.zarr``): one
    row a run (run, status, frames, particles, D50 of the last frame with one, seconds),
    from the documents of :meth:`crystalseg.pipeline.RunOutcome.as_dict`, then a count."""

    def d50(doc: dict[str, Any]) -> str:
        value = doc.get("d50_end")
        if value is None or value != value:
            return "-"
        return f"{value:.3g} {doc.get('size_units') or 'px'}"

    rows = [("run", "status", "frames", "particles", "D50 end", "seconds")]
    for doc in documents:
        rows.append(
            (
                str(doc["path"]),
                str(doc["status"]),
                str(doc.get("frames", "-")),
                str(doc.get("particles", "-")),
                d50(doc),
                f"{doc['seconds']:.1f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.ljust(w) if i < 2 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    failed = sum(doc["status"] == "failed" for doc in documents)
    done = len(documents) - failed
    lines.append(f"{done} of {counted(len(documents), 'run')} done, {failed} failed")
    return "\n".join(lines)
