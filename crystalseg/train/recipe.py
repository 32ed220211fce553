"""How the bundled default model is made: synthetic runs in, ``crystalseg train`` out.

Reproduce it with two stages (a from-scratch cycle, then a second cycle on more runs
that starts from the first)::

    python -m crystalseg.train.recipe stage1 --workdir data1 --epochs 18 --lr 2e-3
    python -m crystalseg.train.recipe crystalseg/models/default --workdir data2 \
        --init stage1 --runs-per-scenario 12 --epochs 20 --lr 1e-3

(the exact commands of the shipped model are in its ``model.json``, key
``recipe_commands``, and in the README). ``--average A B`` makes a checkpoint
whose weights are the mean of two or more checkpoints of one architecture (for
example two cycles from the same start) and validates it on the held-out runs of
the cycle's folder, instead of training.

It renders :data:`TRAIN_RUNS` synthetic runs (every scenario, many seeds, so many
randomised looks: contrast polarity and strength, rims, facets, blur, noise, light,
magnification, uint8 and uint16), then trains on them with the same
:func:`crystalseg.train.train_model` that ``crystalseg train`` calls, with three
classes (background, crystal, boundary) so that the measurement can split touching
crystals (``--boundary contact``: a third class only where crystals touch), and
per-image percentile scaling so that recordings of any bit depth and exposure look
alike to the model. Validation holds out whole runs. Seeds from
:data:`FIRST_SEED` on are used here; evaluations use seeds below it.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shlex
import sys
from pathlib import Path

import torch

from crystalseg.errors import ConfigError
from crystalseg.models.checkpoint import DEFAULT_ENCODER
from crystalseg.synth import SCENARIO_NAMES, SynthConfig, get_scenario, synthesize_run
from crystalseg.synth.population import stream
from crystalseg.train.losses import LOSS_NAMES
from crystalseg.train.settings import TrainSettings, train_model

log = logging.getLogger(__name__)

CODES = ("background", "crystal", "boundary")
#: Codes of a model whose third class marks only where crystals touch (``--boundary contact``).
CODES_CONTACT = ("background", "crystal", "contact")
FIRST_SEED = 1000
RUNS_PER_SCENARIO = 8
FRAMES = 24
FRAME_STEP = 6
SIZE = 384
#: Random stream (beside the run's own, see :func:`crystalseg.synth.population.stream`)
#: that draws a training run's depth spread.
STREAM_DEPTH_SPREAD = 17
#: Random stream that decides whether a training run is faint (``faint``).
STREAM_FAINT = 18
#: Look of a faint training run: the run's contrast range and the least optical
#: density that a labelled crystal keeps (scenarios: 0.45-1.6 and 0.12), for crystals
#: whose edges darken the light by only 5-10 %.
FAINT_CONTRAST = (0.12, 0.45)
FAINT_MIN_VISIBLE_OD = 0.05
#: Random stream that decides whether a training run draws its rims inside (``rim_inside``).
STREAM_RIM_INSIDE = 19
#: :attr:`~crystalseg.synth.Scenario.rim_outside` of such a run: each crystal's rim
#: band stops at its outline, or keeps part of its outer half.
RIM_INSIDE_OUTSIDE = (0.0, 1.0)


def _render(job: tuple[Path, SynthConfig]) -> None:
    path, config = job
    synthesize_run(path, config, overwrite=True)


def make_training_runs(
    workdir: Path,
    *,
    runs_per_scenario: int = RUNS_PER_SCENARIO,
    extra: dict[str, int] | None = None,
    jobs: int = 1,
    first_seed: int = FIRST_SEED,
    depth_spread: tuple[float, float] | None = None,
    faint: float = 0.0,
    rim_inside: float = 0.0,
) -> Path:
    """Render the synthetic training runs into ``workdir/runs`` (skips runs already there).

    ``runs_per_scenario`` runs of every scenario, then ``extra[scenario]`` more of the
    named ones (e.g. more bubbles, so that the model learns what is not a crystal).
    Seeds count up from ``first_seed`` (at least :data:`FIRST_SEED`; a later cycle adds
    fresh runs to the same folder by starting higher); the runs depend on their seeds
    only, so ``jobs`` worker processes render the same runs as one.

    ``depth_spread`` = (low, high) gives every run its own
    :attr:`~crystalseg.synth.Scenario.depth_spread`, drawn uniformly from that range
    by the run's seed, for more strongly defocused crystals than the scenarios draw
    (``None`` keeps the scenarios' own).

    ``faint`` is the fraction of runs (chosen by seed) drawn with a fainter look:
    contrast :data:`FAINT_CONTRAST`, and labelled crystals kept visible only down to
    :data:`FAINT_MIN_VISIBLE_OD`, for nearly transparent crystals.

    ``rim_inside`` is the fraction of runs (chosen by seed) whose crystals draw the
    dark rim band inside their outline, or part of its outer half only
    (:data:`RIM_INSIDE_OUTSIDE`): the scenarios draw it straddling the edge, and a
    model trained on those alone outlines a crystal whose dark edge lies inside it
    (refraction in a transparent crystal) half a pixel too small.
    """
    if first_seed < FIRST_SEED:
        raise ValueError(f"first_seed {first_seed} < {FIRST_SEED}: lower seeds are for evaluation")
    for name, value in (("faint", faint), ("rim_inside", rim_inside)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} {value} is not a fraction in [0, 1]")
    runs = workdir / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    plan = [(s, runs_per_scenario) for s in SCENARIO_NAMES] + list((extra or {}).items())
    todo = []
    seed = first_seed
    for scenario, count in plan:
        for k in range(count):
            path = runs / f"{scenario}-{seed}.zarr"
            if not (path / "zarr.json").exists():
                params = get_scenario(scenario)
                if depth_spread is not None:
                    spread = stream(seed, STREAM_DEPTH_SPREAD).uniform(*depth_spread)
                    params = dataclasses.replace(params, depth_spread=float(spread))
                if faint > 0 and stream(seed, STREAM_FAINT).random() < faint:
                    params = dataclasses.replace(
                        params, contrast=FAINT_CONTRAST, min_visible_od=FAINT_MIN_VISIBLE_OD
                    )
                if rim_inside > 0 and stream(seed, STREAM_RIM_INSIDE).random() < rim_inside:
                    params = dataclasses.replace(params, rim_outside=RIM_INSIDE_OUTSIDE)
                config = SynthConfig(
                    frames=FRAMES,
                    height=SIZE,
                    width=SIZE,
                    seed=seed,
                    scenario=params,
                    dtype="uint16" if k % 4 == 3 else "uint8",
                )
                todo.append((path, config))
            seed += 1
    if jobs > 1 and len(todo) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(min(jobs, len(todo))) as pool:
            list(pool.map(_render, todo))
    else:
        for job in todo:
            _render(job)
    return runs


def epochs_for_budget(
    settings: TrainSettings, minutes: float, *, probe_runs: int = 6, probe_steps: int = 12
) -> int:
    """Epochs of the one-cycle schedule of ``settings`` that fit in ``minutes``.

    Times a few training steps and a validation pass on ``probe_runs`` of the runs
    (same crops, batch, model and device), scales them to all the runs and subtracts
    the reading of every frame and the probe itself. The training that follows keeps
    ``minutes`` as its ``max_minutes`` safety net.
    """
    import math
    import time

    import numpy as np

    from crystalseg.train.settings import settings_data, settings_learner

    started = time.perf_counter()
    folder = settings.data.paths[0]
    if not isinstance(folder, Path):
        raise ConfigError(f"epochs_for_budget needs a folder of run stores, not the pair {folder}")
    runs = sorted(folder.glob("*.zarr"))
    subset = runs[:: max(1, len(runs) // probe_runs)][:probe_runs]
    data = settings_data(settings, subset, valid_fraction=0.3)
    learner = settings_learner(settings, data, progress=False)
    t0 = time.perf_counter()
    data.preload(learner.spec)
    read_s = (time.perf_counter() - t0) / len(data.items)
    optimizer, scaler = learner._optimizer(1e-6), learner._scaler()
    rng = np.random.default_rng(settings.schedule.seed)
    learner.model.train()
    steps, t_start = 0, time.perf_counter()
    while steps < probe_steps + 3:
        for x, y in learner._batches(rng):
            if steps == 3:  # after the first steps' one-off costs (autotuning)
                if learner.device.type == "cuda":
                    torch.cuda.synchronize()
                t_start = time.perf_counter()
            learner._step(x, y, optimizer, scaler)
            steps += 1
            if steps == probe_steps + 3:
                break
    if learner.device.type == "cuda":
        torch.cuda.synchronize()
    step_s = (time.perf_counter() - t_start) / probe_steps
    learner.validate()  # first pass: one-off costs
    t0 = time.perf_counter()
    learner.validate()
    valid_s = (time.perf_counter() - t0) / max(1, len(data.valid_items))
    per_run = len(data.items) / len(subset)
    n_valid = round(settings.data.valid_fraction * len(runs)) * per_run
    n_train = len(runs) * per_run - n_valid
    epoch_s = math.ceil(n_train * data.crops_per_image / learner.batch_size) * step_s
    epoch_s += n_valid * valid_s
    left = 60 * minutes - (time.perf_counter() - started) - read_s * len(runs) * per_run - 20
    epochs = int(max(1, left // epoch_s))
    log.info(
        "%.3f s a step, %.3f s a validation frame: an epoch takes ~%.0f s; %d epochs fit "
        "in %g minutes",
        step_s,
        valid_s,
        epoch_s,
        epochs,
        minutes,
    )
    return epochs


def _scenario_counts(text: str) -> dict[str, int]:
    """``"bubbles=16,clear=8"`` -> ``{"bubbles": 16, "clear": 8}``."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, count = part.partition("=")
        if name not in SCENARIO_NAMES or not count.isdigit():
            raise argparse.ArgumentTypeError(f"'{part}' is not SCENARIO=COUNT")
        out[name] = int(count)
    return out


def _spread_range(text: str) -> tuple[float, float]:
    """``"0.4,0.9"`` -> ``(0.4, 0.9)``."""
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not LOW,HIGH (e.g. 0.4,0.9)") from None
    if not 0 <= low <= high:
        raise argparse.ArgumentTypeError(f"'{text}' is not a range 0 <= LOW <= HIGH")
    return low, high


def _lineage(checkpoint: Path) -> list[str]:
    """The training commands that made ``checkpoint``, oldest first (through ``--init``)."""
    import json

    commands: list[str] = []
    seen = set()
    while checkpoint and (checkpoint / "model.json").is_file() and checkpoint not in seen:
        seen.add(checkpoint)
        meta = json.loads((checkpoint / "model.json").read_text())
        if meta.get("recipe_commands"):  # a shipped model: its own lineage is recorded
            return [*meta["recipe_commands"], *commands]
        training = meta.get("training", {})
        command = training.get("settings", {}).get("command")
        if command:
            commands.insert(0, command)
        sources = training.get("init", {}).get("checkpoints")
        if sources:  # an average: every source's lineage, each command once
            before = [c for src in sources for c in _lineage(Path(src["path"]))]
            return [*dict.fromkeys(before), *commands]
        parent = training.get("init", {}).get("checkpoint")
        checkpoint = Path(parent) if parent else None  # type: ignore[assignment]
    return commands


def average_checkpoints(
    sources: list[Path], dest: Path, settings: TrainSettings | None = None
) -> Path:
    """Write to ``dest`` a checkpoint whose weights are the mean of ``sources``' weights.

    Weight averaging of fine-tuned models from one start (a "model soup"): the mean
    of two cycles often keeps what each learned where neither alone does. Every
    source must have the same spec (architecture, encoder, classes, scaling);
    float tensors are averaged in float32, integer ones (batch-norm step counters)
    taken from the first source. With ``settings``, the average is validated on the
    held-out runs of ``settings.data`` (the split a training cycle with these
    settings would use), and those figures are its ``metrics``; ``model.json``
    records the sources and their checksums under ``training.init``.
    """
    from crystalseg.models.checkpoint import build_model, load_checkpoint, save_checkpoint
    from crystalseg.train.settings import settings_data, settings_learner

    if len(sources) < 2:
        raise ValueError("--average needs two or more checkpoints")
    loaded = [load_checkpoint(src) for src in sources]
    spec = loaded[0][1]
    for src, (_, other, _) in zip(sources[1:], loaded[1:], strict=True):
        if other.to_dict() != spec.to_dict():
            raise ValueError(
                f"'{src}' is not the same network as '{sources[0]}' (spec differs); only "
                "checkpoints of one architecture, classes and scaling can be averaged"
            )
    states = [model.state_dict() for model, _, _ in loaded]
    mean = {
        k: torch.stack([s[k].float() for s in states]).mean(0) if v.is_floating_point() else v
        for k, v in states[0].items()
    }
    model = build_model(spec)
    model.load_state_dict(mean, strict=True)
    init = {
        "kind": "average",
        "checkpoints": [
            {
                "path": str(src),
                "sha256": meta["weights"]["sha256"],
                "epochs_done": meta.get("training", {}).get("epochs_done"),
                "validation": (meta.get("metrics") or [None])[-1],  # its saved epoch's
            }
            for src, (_, _, meta) in zip(sources, loaded, strict=True)
        ],
    }
    training: dict[str, object] = {"init": init}
    metrics: list[dict[str, object]] = []
    fingerprint = str(loaded[0][2].get("data_fingerprint", ""))
    if settings is not None:
        data = settings_data(settings)
        learner = settings_learner(settings, data, init=sources[0], progress=False)
        learner.model.load_state_dict(mean, strict=True)
        learner.model.eval()
        record = {"epoch": 0, **learner.validate()}
        log.info(
            "average of %d: validation foreground IoU %.3f, particle F1 %s",
            len(sources),
            record.get("foreground_iou", float("nan")),
            record.get("instance_f1"),
        )
        metrics.append(record)
        fingerprint = data.fingerprint
        training.update(data=data.summary(), settings=settings.to_dict())
    return save_checkpoint(
        dest, model, spec, training=training, metrics=metrics, data_fingerprint=fingerprint
    )


def ship_model(src: Path, dest: Path) -> Path:
    """Copy checkpoint ``src`` to ``dest`` with float weights stored as float16.

    Halves the size of the package; loading casts them back to the model's float32
    (predictions of the bundled model agree with the float32 checkpoint on >99.9 % of
    pixels, checked in the README's figures). ``model.json`` keeps everything, with
    the new checksum and ``weights.stored_dtype``.
    """
    import hashlib
    import json

    import torch
    from safetensors.torch import load_file, save_file

    from crystalseg.models.checkpoint import META_FILE, WEIGHTS_FILE

    state = load_file(str(src / WEIGHTS_FILE))
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    dest.mkdir(parents=True, exist_ok=True)
    save_file(half, str(dest / WEIGHTS_FILE))
    meta = json.loads((src / META_FILE).read_text())
    meta["recipe_commands"] = [
        *_lineage(src),
        f"python -m crystalseg.train.recipe {src} --ship {dest} --ship-only",
    ]
    digest = hashlib.sha256((dest / WEIGHTS_FILE).read_bytes()).hexdigest()
    meta["weights"] = {**meta["weights"], "sha256": digest, "stored_dtype": str(torch.float16)}
    meta["training"]["init"].pop("checkpoint", None)  # a path on the trainer's machine
    (dest / META_FILE).write_text(json.dumps(meta, indent=1))
    return dest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="where the checkpoint goes")
    parser.add_argument("--workdir", type=Path, default=Path("default-model-data"))
    parser.add_argument(
        "--epochs",
        type=lambda v: v if v == "auto" else int(v),
        default=30,
        help="epochs, or auto: as many as fit in --max-minutes (measured first)",
    )
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--runs-per-scenario", type=int, default=RUNS_PER_SCENARIO)
    parser.add_argument(
        "--extra", type=_scenario_counts, default={}, help="more runs, e.g. bubbles=16,clear=8"
    )
    parser.add_argument("--init", default="none", help="none, or a checkpoint to continue from")
    parser.add_argument("--device", default=None)
    parser.add_argument("--encoder", default=None, help="smp encoder (default: mobilenet_v2)")
    parser.add_argument(
        "--decoder-channels", default=None, help="e.g. 128,64,32,16,16 (default: the bundled)"
    )
    parser.add_argument("--loss", default="dice+ce", choices=LOSS_NAMES)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop-size", type=int, default=256)
    parser.add_argument("--jobs", type=int, default=1, help="processes that render the runs")
    parser.add_argument(
        "--first-seed",
        type=int,
        default=FIRST_SEED,
        help=f"seed of the first run (>= {FIRST_SEED}; higher adds fresh runs to WORKDIR)",
    )
    parser.add_argument(
        "--depth-spread",
        type=_spread_range,
        default=None,
        help="LOW,HIGH: each run's crystal depth spread (scenarios: 0.4); more defocus",
    )
    parser.add_argument(
        "--faint",
        type=float,
        default=0.0,
        help="fraction of runs with a fainter look (contrast 0.12-0.45); default 0",
    )
    parser.add_argument(
        "--rim-inside",
        type=float,
        default=0.0,
        help="fraction of runs whose crystals' dark rim stops at (or fades past) their "
        "outline instead of straddling it; default 0",
    )
    parser.add_argument(
        "--boundary",
        choices=("rim", "contact"),
        default="rim",
        help="third class: every crystal's rim (default) or only where crystals touch",
    )
    parser.add_argument(
        "--augment",
        choices=("strong", "strong-zoom", "strong-motion", "strong-jpeg"),
        default="strong",
        help="augmentation preset; strong-zoom adds 1.5-4x zoom-ins (high magnification), "
        "strong-motion 3-15 px motion-blur streaks, strong-jpeg JPEG at quality 15-90",
    )
    parser.add_argument("--frame-step", type=int, default=FRAME_STEP, help="every n-th frame")
    parser.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget")
    parser.add_argument(
        "--freeze-bn",
        action="store_true",
        help="keep the starting model's batch-norm statistics (the shipped cycles learned them)",
    )
    parser.add_argument(
        "--average",
        type=Path,
        nargs="+",
        default=None,
        metavar="CKPT",
        help="instead of training: average these checkpoints' weights into OUTPUT and "
        "validate the average on the held-out runs of WORKDIR",
    )
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run")
    parser.add_argument("--ship", type=Path, default=None, help="then copy it here as float16")
    parser.add_argument("--ship-only", action="store_true", help="only copy OUTPUT to --ship")
    args = parser.parse_args(argv)
    if args.average is not None and len(args.average) < 2:
        parser.error("--average needs two or more checkpoints")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.epochs == "auto" and args.max_minutes is None:
        parser.error("--epochs auto needs --max-minutes")
    if args.ship_only:
        if args.ship is None:
            parser.error("--ship-only needs --ship DEST")
        log.info("shipped %s", ship_model(args.output, args.ship))
        return

    try:
        runs = make_training_runs(
            args.workdir,
            runs_per_scenario=args.runs_per_scenario,
            extra=args.extra,
            jobs=args.jobs,
            first_seed=args.first_seed,
            depth_spread=args.depth_spread,
            faint=args.faint,
            rim_inside=args.rim_inside,
        )
    except ValueError as exc:  # --first-seed below the evaluation seeds
        parser.error(str(exc))
    decoder = args.decoder_channels
    settings = TrainSettings.from_flat(
        data=(runs,),
        codes=CODES_CONTACT if args.boundary == "contact" else CODES,
        output_dir=args.output,
        init=args.init,
        epochs=1 if args.epochs == "auto" else args.epochs,
        max_minutes=args.max_minutes,
        lr=args.lr,
        loss=args.loss,
        crop_size=args.crop_size,
        batch_size=args.batch_size,
        valid_fraction=0.15,
        frame_step=args.frame_step,
        scaling="percentile",
        augment=args.augment,
        overwrite=not args.resume,
        resume=args.output if args.resume else None,
        device=args.device,
        seed=0,
        command=shlex.join(
            ["python", "-m", "crystalseg.train.recipe", *(sys.argv[1:] if argv is None else argv)]
        ),
        encoder=args.encoder or DEFAULT_ENCODER,
        decoder_channels=tuple(int(c) for c in decoder.split(",")) if decoder else None,
        freeze_bn=args.freeze_bn,
    )
    if args.average:
        from crystalseg.errors import CrystalsegError

        try:
            average_checkpoints(args.average, args.output, settings)
        except (ValueError, CrystalsegError) as exc:  # another network, an unreadable one
            parser.error(str(exc))
        if args.ship is not None:
            log.info("shipped %s", ship_model(args.output, args.ship))
        return
    if args.epochs == "auto":
        import time

        t0 = time.perf_counter()
        epochs = epochs_for_budget(settings, args.max_minutes)
        left = args.max_minutes - (time.perf_counter() - t0) / 60  # the probe's share
        words = shlex.split(settings.command or "")
        words[words.index("auto")] = str(epochs)  # the record says what ran
        schedule = dataclasses.replace(settings.schedule, epochs=epochs, max_minutes=max(left, 0.1))
        settings = dataclasses.replace(settings, schedule=schedule, command=shlex.join(words))
    result = train_model(settings)
    log.info(
        "best validation particle F1 %.4f; checkpoint %s", result.best_score, result.best_checkpoint
    )
    if args.ship is not None:
        log.info("shipped %s", ship_model(args.output, args.ship))


if __name__ == "__main__":
    main()
