"""``sharedflow compare``: parameters against quality, NanoFlow's central trade-off.

Each entry (a recipe, a run directory or a checkpoint) is trained for every seed (or its
finished run reused; an interrupted run resumes). Every run is then scored on every held-out
set: the first entry's own held-out data, or the sets given with ``--data`` (a folder, file
list, LJSpeech tree, image folder or array; ``own`` names the first entry's held-out data, so
the built-in clips and a folder of real speech can be scored side by side). Audio: test LL
(nats per sample) and the resynthesis scores of ``sharedflow.audio.quality`` (PESQ, STOI, MCD,
MR-STFT, log-mel L1, periodicity and pitch error), beside white noise of each clip's loudness
as a floor. Images: bits per dim. Each figure is the mean and standard deviation over seeds;
a difference from the best entry smaller than the two spreads together is marked as not
significant.

Runs trained here validate once, at their end, and log every step's loss
(``trainer.val_every=0 trainer.log_every=1``, unless an override says otherwise): the
held-out figures are the scores above.

Written under ``out``: ``results.md`` and ``results.csv``, ``quality_vs_params.png``,
``training_curves.png`` (each entry's first run's training loss, a mean over 10 steps), and
``samples/``: per entry the resynthesis of the first held-out clip (wav, and a spectrogram
against the original) or a grid of samples next to real images, and ``overview.png``, those
pictures one under another.
An entry that fails is reported as failed and the rest go on.
"""

from __future__ import annotations

import csv
import json
import statistics
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sharedflow.api import HeldOut, held_out_set, load_model, parameter_report
from sharedflow.checkpoint import resolve_checkpoint, run_directory
from sharedflow.core.metrics import Metric
from sharedflow.data.held_out import held_out_path
from sharedflow.errors import first_line
from sharedflow.evaluate import evaluate
from sharedflow.recipes import RecipeError, list_recipes
from sharedflow.sharing import as_sharing, deploy
from sharedflow.train.loop import read_metrics
from sharedflow.train.pool import LOG, Job, available_cores, train_all

__all__ = ["NOISE", "OWN", "OWN_LABEL", "PRESETS", "Entry", "compare"]

PRESETS: dict[str, list[str]] = {
    "micro": ["audio/waveflow-tiny", "audio/nanoflow-tiny"],  # with --steps 2: the test suite
    "audio-tiny": [
        "audio/waveflow-tiny",
        "audio/nanoflow-naive-tiny",
        "audio/nanoflow-decomp-tiny",
        "audio/nanoflow-tiny",
    ],
    "image-tiny": [
        "image/tarflow-tiny",
        "image/nanoflow-tarflow-tiny",
        "image/glow-tiny",
        "image/nanoflow-glow-tiny",
    ],
}
NOISE = "white noise (same loudness)"
OWN = "own"  # --data own: the first entry's own held-out data (the default set)
OWN_LABEL = "the first entry's held-out data"
# compare's overrides for every run it trains; those given after them win
TRAINING = ["trainer.val_every=0", "trainer.log_every=1", "trainer.threads=1"]


@dataclass
class Entry:
    """One row of the comparison: ``scores[held-out set][metric]`` holds one value per seed."""

    name: str
    family: str = ""
    sharing: str = ""
    modality: str = ""
    task: Any = field(default=None, repr=False)  # the first run's deploy form (a core.task.Task)
    params: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    train_seconds: list[float] = field(default_factory=list)
    speed: float = float("nan")
    speed_unit: str = ""
    runs: list[Path] = field(default_factory=list)
    pictures: list[Path] = field(default_factory=list)  # the first run's, from write_samples
    error: str = ""

    @property
    def columns(self) -> list[Metric]:
        """The table's figures: the held-out metric, then the sample-quality ones (results.csv
        also has the rest, such as the pitch error, undefined with no frame voiced in both)."""
        return [self.task.metric, *self.task.quality_metrics] if self.task else []

    def add(self, held_out: str, result: dict[str, float]) -> None:
        for metric, value in result.items():
            self.scores.setdefault(held_out, {}).setdefault(metric, []).append(value)


def _describe(config: dict[str, Any]) -> tuple[str, str]:
    model = config["model"]
    sharing = as_sharing(model.get("sharing", "independent"), model.get("embedding_dim", 0))
    return model["_target_"].rsplit(".", 1)[-1], sharing.name


def _planned_runs(
    name: str,
    out: Path,
    seeds: int,
    steps: int | None,
    minutes: float | None,
    overrides: Sequence[str] = (),
) -> tuple[list[Path], list[Job]]:
    """Run directories of ``name``, and the jobs that train those not finished: one per seed
    of a recipe (with ``overrides``), none for a run, a checkpoint, or a folder of ``seed-N``
    runs (an entry of an earlier comparison)."""
    path = Path(name)
    if path.exists():
        seeded = [p for p in path.glob("seed-*") if p.name[5:].isdigit()]
        seeded.sort(key=lambda p: int(p.name[5:]))
        return [resolve_checkpoint(run) for run in seeded] or [resolve_checkpoint(path)], []
    if name not in list_recipes():
        raise RecipeError(f"{name}: neither a recipe nor a run directory or checkpoint")
    runs, jobs = [], []
    for seed in range(seeds):
        run_dir = out / "runs" / name.replace("/", "_") / f"seed-{seed}"
        runs.append(run_dir)
        if (run_dir / "finished.json").is_file():
            continue
        # One validation, at the end (the scores below are the comparison's held-out figures),
        # the loss of every step for the curves, one thread; a given override wins.
        given = [*TRAINING, *overrides, f"trainer.seed={seed}", "trainer.progress=false"]
        if steps is not None:
            given.append(f"trainer.max_steps={steps}")
        if minutes is not None:
            given.append(f"trainer.max_seconds={minutes * 60}")
        jobs.append(Job(name, run_dir, given))
    return runs, jobs


def _threads(overrides: Sequence[str]) -> int | None:
    """The runs' ``trainer.threads``: the last override's, else compare's one."""
    values = [o.split("=", 1)[1] for o in [*TRAINING, *overrides]
              if o.split("=", 1)[0].lstrip("+") == "trainer.threads"]  # fmt: skip
    try:
        return int(values[-1])
    except ValueError:  # null: torch's default, every core
        return None


def _fail(entry: Entry, out: Path, error: Exception | str) -> None:
    """Mark ``entry`` failed (its first error is kept) and log ``error`` to ``errors.log``:
    an exception being handled, with its traceback, or a message."""
    given = isinstance(error, str)
    message = error if given else f"{type(error).__name__}: {first_line(error)}"
    entry.error = entry.error or message
    with (out / "errors.log").open("a") as log:
        log.write(f"{entry.name}\n{message if given else traceback.format_exc()}\n")


def _score(
    model: torch.nn.Module,
    deployed: torch.nn.Module,
    held_out: HeldOut,
    max_items: int | None,
    temperature: float | None,
) -> dict[str, float]:
    """Likelihood of the training form; sample quality of the deploy form, as a user runs it."""
    result = evaluate(model, held_out.items, "cpu", max_items)
    result.update(deployed.quality(held_out.items, temperature, max_items))
    return result


def _evaluate_entry(
    entry: Entry,
    sets: dict[str, HeldOut],
    data_sources: list[str] | None,
    max_items: int | None,
    out: Path,
    temperature: float | None = None,
) -> None:
    """Scores of each run on every held-out set (the first entry's, or ``data_sources``)."""
    for i, run in enumerate(entry.runs):
        model, config = load_model(run)
        deployed = deploy(model)  # once per run: resynthesis, speed and samples use it
        entry.family, entry.sharing = _describe(config)
        entry.modality = model.modality
        if not sets:
            for source in data_sources or [OWN]:
                overrides = {} if source == OWN else {"source": source}
                held_out = held_out_set(config, overrides)
                held_out.kind = model.modality
                sets[OWN_LABEL if source == OWN else source] = held_out
        for label, held_out in sets.items():
            if held_out.kind != entry.modality:
                raise ValueError(
                    f"{entry.name}: an {entry.modality} model in a comparison of "
                    f"{held_out.kind} models (held out: {label})"
                )
            entry.add(label, _score(model, deployed, held_out, max_items, temperature))
        if i == 0:
            first = next(iter(sets.values()))
            entry.params = parameter_report(model)
            entry.task = deployed
            entry.speed, entry.speed_unit = deployed.speed(first.items)
            stem = entry.name.replace("/", "_")
            written = deployed.write_samples(out / "samples", stem, first.items, temperature)
            entry.pictures = [p for p in written if p.suffix == ".png"]
        entry.train_seconds.append(_train_seconds(run_directory(run)))


def _train_seconds(run_dir: Path) -> float:
    """A finished run's training time (NaN when unknown)."""
    finished = run_dir / "finished.json"
    record = json.loads(finished.read_text()) if finished.is_file() else {}
    return float(record.get("train_seconds", float("nan")))


def compare(
    names: list[str],
    out: str | Path,
    steps: int | None = None,
    minutes: float | None = None,
    seeds: int = 1,
    max_items: int | None = None,
    data: list[str] | None = None,
    progress: bool = False,
    temperature: float | None = None,
    overrides: Sequence[str] = (),
    jobs: int | None = None,
) -> list[Entry]:
    """Train (or reuse) and evaluate every entry; write the tables, plots and samples.

    ``temperature``: the vocoders' resynthesis temperature (default: each model's own).
    ``overrides``: Hydra overrides for every recipe trained here, such as ``data.source=...``
    (a finished run is reused as it is). Runs train with one thread each
    (``trainer.threads=1`` unless overridden), ``jobs`` at a time, each in a process of its
    own (default: as many as the cores allow; 1: one after another, in this process); the
    figures do not depend on ``jobs``. A held-out path in ``data`` that does not exist is an
    error before anything is trained."""
    for source in data or []:
        if source != OWN:
            held_out_path(source)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    entries = [Entry(name) for name in names]
    pending: list[tuple[Entry, Job]] = []
    for entry in entries:
        try:
            entry.runs, planned = _planned_runs(entry.name, out, seeds, steps, minutes, overrides)
            pending += [(entry, job) for job in planned]
        except Exception as error:  # one failed entry must not stop the comparison
            _fail(entry, out, error)
    threads = _threads(overrides)
    parallel = jobs or max(1, available_cores() // (threads or available_cores()))
    parallel = max(1, min(parallel, len(pending)))
    _say(progress, f"training {len(pending)} run(s), {parallel} at a time, "
                   f"{threads or 'all'} thread(s) each")  # fmt: skip
    owner = {id(job): entry for entry, job in pending}

    def trained(job: Job) -> None:
        if job.error:
            _fail(owner[id(job)], out, f"{job.error} (the run's log: {job.run_dir / LOG})")
            _say(progress, f"{job.recipe} {job.run_dir.name}: failed: {job.error}")
        else:
            seconds = _train_seconds(job.run_dir)
            _say(progress, f"{job.recipe} {job.run_dir.name}: trained, {seconds:.0f} s")

    train_all([job for _, job in pending], parallel, threads, trained)
    sets: dict[str, HeldOut] = {}
    for entry in entries:
        if entry.error:
            continue
        _say(progress, f"{entry.name}: scoring")
        try:
            _evaluate_entry(entry, sets, data, max_items, out, temperature)
        except Exception as error:  # one failed entry must not stop the comparison
            _fail(entry, out, error)
    first = next((e for e in entries if e.task is not None and not e.error), None)
    floors = {label: first.task.quality_floor(held_out.items, max_items)
              for label, held_out in sets.items()} if first else {}  # fmt: skip
    if any(floors.values()):
        noise = Entry(NOISE, modality=first.modality)
        for label, floor in floors.items():
            noise.add(label, floor)
        entries.append(noise)
    _write_tables(entries, sets, out, temperature)
    _overview([p for e in entries for p in e.pictures], out / "samples" / "overview.png")
    _plot([e for e in entries if e.runs], out, next((e for e in entries if e.name == NOISE), None))
    return entries


def _overview(pictures: list[Path], path: Path) -> None:
    """Every entry's picture (a spectrogram, or real images beside samples) in one PNG, one
    under another."""
    from PIL import Image

    if not pictures:
        return
    images = [Image.open(p).convert("RGB") for p in pictures]
    size = (max(i.width for i in images), sum(i.height for i in images))
    canvas = Image.new("RGB", size, "white")
    top = 0
    for image in images:
        canvas.paste(image, (0, top))
        top += image.height
    canvas.save(path)


def _say(progress: bool, message: str) -> None:
    if progress:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _cell(mean: float, std: float) -> str:
    if mean != mean:
        return ""
    return f"{mean:.3f}" if std != std else f"{mean:.3f} ± {std:.3f}"


def _mean_std(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if v == v]
    if not finite:
        return float("nan"), float("nan")
    return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else float("nan")


def _significance(entries: list[Entry], label: str, metric: Metric) -> dict[str, str]:
    """Per entry: "best", "n.s." (within the spreads of the best), or ""."""
    rows = {e.name: _mean_std(e.scores[label][metric.name]) for e in entries
            if e.runs and metric.name in e.scores.get(label, {})}  # fmt: skip
    rows = {k: v for k, v in rows.items() if v[0] == v[0]}
    if not rows:
        return {}
    sign = 1 if metric.higher_is_better else -1
    best = max(rows, key=lambda k: sign * rows[k][0])
    marks = {best: "best"}
    for name, (mean, std) in rows.items():
        spread = std + rows[best][1]
        tie = 1e-9 * max(1.0, abs(rows[best][0]))
        if name != best and spread == spread and abs(mean - rows[best][0]) <= spread + tie:
            marks[name] = "n.s."
    return marks


CSV_HEADER = ["entry", "family", "sharing", "params", "shared", "per_step", "embedding",
              "deploy_params", "held_out", "metric", "mean", "std", "seeds", "significance",
              "train_seconds", "speed", "speed_unit", "status"]  # fmt: skip


def _csv_rows(e: Entry, label: str, marks: dict[str, dict[str, str]]) -> list[list[Any]]:
    """One row per metric that ``e`` has on held-out set ``label`` (a failed entry: one row)."""
    training, deployed = e.params.get("training", {}), e.params.get("deploy", {})
    described = [e.name, e.family, e.sharing, training.get("total", ""),
                 training.get("shared", ""), max(training.get("per_step") or [0]),
                 training.get("embedding", ""), deployed.get("total", ""), label]  # fmt: skip
    timing = [statistics.fmean(e.train_seconds) if e.train_seconds else "", e.speed, e.speed_unit]
    if e.error:
        return [[*described, "", "", "", "", "", *timing, f"failed: {e.error}"]]
    return [
        [*described, m, *_mean_std(values), len(values), marks.get(m, {}).get(e.name, ""),
         *timing, "ok"]
        for m, values in e.scores.get(label, {}).items()
    ]  # fmt: skip


def _markdown_row(e: Entry, label: str, columns: list[Metric], marks: dict) -> str:
    if e.error:
        return f"| {e.name} | failed: {e.error} |"
    cells = []
    for m in columns:
        cell = _cell(*_mean_std(e.scores.get(label, {}).get(m.name, [])))
        mark = marks[m.name].get(e.name, "")
        cells.append(f"**{cell}**" if mark == "best" else f"{cell} {mark}".strip())
    training, deployed = e.params.get("training"), e.params.get("deploy")
    params = f"{training['total']:,} | {deployed['total']:,}" if training else " | "
    timing = (
        f"{statistics.fmean(e.train_seconds):.0f} | {e.speed:.1f} {e.speed_unit}"
        if e.runs
        else " | "
    )
    return f"| {e.name} | {params} | " + " | ".join(cells) + f" | {timing} |"


def _write_tables(
    entries: list[Entry], sets: dict[str, HeldOut], out: Path, temperature: float | None = None
) -> None:
    first = next((e for e in entries if e.task is not None and not e.error), None)
    columns = first.columns if first else []
    rows, lines = [], []
    for label, held_out in (sets or {"(none)": None}).items():
        marks = {m.name: _significance(entries, label, m) for m in columns}
        lines += [
            f"Held out: {held_out.description if held_out else label}",
            "",
            "| entry | params | deploy | "
            + " | ".join(m.name for m in columns)
            + " | train s | speed |",
            "|---" * (len(columns) + 5) + "|",
            *[_markdown_row(e, label, columns, marks) for e in entries],
            "",
        ]
        rows += [row for e in entries for row in _csv_rows(e, label, marks)]
    seeds = max((len(e.runs) for e in entries), default=0)
    lines += [f"- {m.name}: {m.unit}, {'higher' if m.higher_is_better else 'lower'} is better."
              for m in columns]  # fmt: skip
    lines += [
        f"- Mean ± standard deviation over {seeds} seed(s). **Bold**: the best entry; n.s.: its "
        "difference from the best is no larger than their spreads added (not significant)."
        + (" With one seed there is no spread to judge by." if seeds < 2 else ""),
        "- Params: training form (with weight norm, embeddings); deploy: weight norm removed, "
        "flow embeddings folded. Speed: synthesis of 1 s of held-out audio, or sampling.",
    ]
    if first and first.task.quality_metrics:
        lines.append(
            "- Resynthesis temperature: "
            + ("each model's own." if temperature is None else f"{temperature:g}.")
        )
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_HEADER)
        writer.writerows(rows)
    (out / "results.md").write_text("\n".join(lines) + "\n")


def _plot(entries: list[Entry], out: Path, floor: Entry | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [e for e in entries if not e.error and e.scores]
    columns = ok[0].columns if ok else []
    if not columns:
        return  # nothing was scored
    metrics = columns[:2]  # the held-out metric and the first sample-quality figure
    markers = {"independent": "o", "shared": "s", "decomposed": "^", "nanoflow": "*"}
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for e in ok:
            label = next(iter(e.scores))
            mean, std = _mean_std(e.scores[label].get(metric.name, []))
            x = e.params["training"]["total"]
            ax.errorbar(x, mean, yerr=0 if std != std else std, fmt=markers.get(e.sharing, "o"),
                        markersize=9, label=f"{e.family} / {e.sharing}")  # fmt: skip
            ax.annotate(e.name.split("/")[-1], (x, mean), fontsize=7,
                        textcoords="offset points", xytext=(5, 5))  # fmt: skip
        if floor is not None and metric.name in next(iter(floor.scores.values()), {}):
            level = _mean_std(next(iter(floor.scores.values()))[metric.name])[0]
            ax.axhline(level, color="grey", linestyle="--", linewidth=1, label=NOISE)
        ax.set_xscale("log")
        ax.set_xlabel("parameters (training form)")
        ax.set_ylabel(metric.unit)
        ax.grid(alpha=0.3)
        if ok:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "quality_vs_params.png", dpi=120)
    plt.close(fig)

    _plot_training([run_directory(e.runs[0]) for e in ok], [e.name for e in ok], out)


def _plot_training(run_dirs: list[Path], names: list[str], out: Path, window: int = 10) -> None:
    """``training_curves.png``: each run's training loss, the mean of the last ``window`` logged
    steps, against the step; the y range is that of each run's later three quarters (the loss
    of the first steps is far above)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    later = []
    for run_dir, name in zip(run_dirs, names, strict=True):
        logged = [(r["step"], r["loss"]) for r in read_metrics(run_dir) if "loss" in r]
        if not logged:
            continue
        steps, losses = zip(*logged, strict=True)
        mean = [
            statistics.fmean(losses[max(0, i + 1 - window) : i + 1]) for i in range(len(steps))
        ]
        ax.plot(steps, mean, label=name.split("/")[-1])
        later += [m for step, m in zip(steps, mean, strict=True) if step >= steps[-1] / 4]
    if later:
        low, high = min(later), max(later)
        pad = 0.05 * (high - low) or 0.05
        ax.set_ylim(low - pad, high + pad)
        ax.legend(fontsize=7)
    ax.set_xlabel("step")
    ax.set_ylabel(f"training loss, mean of {window} steps")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "training_curves.png", dpi=120)
    plt.close(fig)
