"""``sharedflow compare``: parameters against quality, NanoFlow's central trade-off.

Each entry (a recipe, a run directory or a checkpoint) is trained for every seed (or its
finished run reused; an interrupted run resumes). Every run is then scored on every held-out
set: the first entry's own held-out data, or the sets given with ``--data`` (a folder, file
list, LJSpeech tree, image folder or array). Audio: test LL (nats per sample) and the
resynthesis scores of ``sharedflow.audio.quality`` (PESQ, STOI, MCD, MR-STFT, log-mel L1,
periodicity and pitch error), beside white noise of each clip's loudness as a floor. Images:
bits per dim. Each figure is the mean and standard deviation over seeds; a difference from
the best entry smaller than the two spreads together is marked as not significant.

Written under ``out``: ``results.md`` and ``results.csv``, ``quality_vs_params.png``,
``validation_curves.png``, and ``samples/``: per entry the resynthesis of the first held-out
clip (wav, and a spectrogram against the original) or a grid of samples next to real images.
An entry that fails is reported as failed and the rest go on.
"""

from __future__ import annotations

import csv
import json
import statistics
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sharedflow.api import HeldOut, held_out_set, load_model, parameter_report
from sharedflow.api import resynthesis_quality as _resynthesis_quality
from sharedflow.audio.quality import METRICS, resynthesis_scores
from sharedflow.errors import first_line
from sharedflow.recipes import RecipeError, list_recipes
from sharedflow.sharing import as_sharing, deploy
from sharedflow.train.checkpoint import resolve_checkpoint
from sharedflow.train.evaluate import evaluate
from sharedflow.train.run import train

__all__ = ["NOISE", "PRESETS", "Entry", "compare"]

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
# The table's columns; results.csv also has the pitch error (f0_cents), which is undefined for
# resynthesis with no frame voiced in both signals.
COLUMNS = {
    "audio": ["ll", "pesq", "stoi", "mcd_db", "mrstft", "log_mel_l1", "periodicity"],
    "image": ["bpd"],
}
NOISE = "white noise (same loudness)"


@dataclass
class Entry:
    """One row of the comparison: ``scores[held-out set][metric]`` holds one value per seed."""

    name: str
    family: str = ""
    sharing: str = ""
    modality: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    train_seconds: list[float] = field(default_factory=list)
    speed: float = float("nan")
    speed_unit: str = ""
    runs: list[Path] = field(default_factory=list)
    error: str = ""

    def add(self, held_out: str, result: dict[str, float]) -> None:
        for metric, value in result.items():
            self.scores.setdefault(held_out, {}).setdefault(metric, []).append(value)


def _describe(config: dict[str, Any]) -> tuple[str, str]:
    model = config["model"]
    sharing = as_sharing(model.get("sharing", "independent"), model.get("embedding_dim", 0))
    return model["_target_"].rsplit(".", 1)[-1], sharing.name


def _trained_runs(
    name: str, out: Path, seeds: int, steps: int | None, minutes: float | None
) -> list[Path]:
    """Run directories of ``name``: trained here for each seed, or given."""
    path = Path(name)
    if path.exists():
        return [resolve_checkpoint(path)]
    if name not in list_recipes():
        raise RecipeError(f"{name}: neither a recipe nor a run directory or checkpoint")
    runs = []
    for seed in range(seeds):
        run_dir = out / "runs" / name.replace("/", "_") / f"seed-{seed}"
        if not (run_dir / "finished.json").is_file():
            overrides = [f"run_dir={run_dir}", f"trainer.seed={seed}", "trainer.progress=false"]
            if steps is not None:
                overrides.append(f"trainer.max_steps={steps}")
            if minutes is not None:
                overrides.append(f"trainer.max_seconds={minutes * 60}")
            train(name, overrides)
        runs.append(run_dir)
    return runs


@torch.no_grad()
def _speed(model: torch.nn.Module, items: Any) -> tuple[float, str]:
    """Synthesis (kHz of 1 s of held-out audio) or sampling (images/s) speed of the deploy
    form ``model``."""
    if model.modality == "audio":
        mel = model.mel(items[0][: model.sample_rate][None])
        run = lambda: model.synthesize(mel).shape[-1] / 1000  # noqa: E731
        unit = "kHz"
    else:
        labels = torch.arange(8) % model.num_classes if model.num_classes else None
        run = lambda: len(model.sample(8, labels))  # noqa: E731
        unit = "images/s"
    run()  # warm-up
    times = []
    for _ in range(3):
        start = time.perf_counter()
        amount = run()
        times.append(time.perf_counter() - start)
    return amount / statistics.median(times), unit


def _run_dir(path: Path) -> Path:
    """The run directory of a run or of one of its checkpoints."""
    return path.parent if (path / "model.safetensors").is_file() else path


def _score(
    model: torch.nn.Module,
    deployed: torch.nn.Module,
    held_out: HeldOut,
    max_items: int | None,
    temperature: float | None,
) -> dict[str, float]:
    """Likelihood of the training form; resynthesis by the deploy form, as a user runs it."""
    result = evaluate(model, held_out.items, "cpu", max_items)
    if model.modality == "audio":
        result.update(_resynthesis_quality(deployed, held_out.items, temperature, max_items))
    return result


@torch.no_grad()
def _noise_floor(held_out: HeldOut, sample_rate: int, max_items: int | None) -> dict[str, float]:
    """The resynthesis scores of white noise with each clip's RMS (seeded), for reference."""
    generator = torch.Generator().manual_seed(0)
    scores: dict[str, list[float]] = {}
    n = len(held_out.items) if max_items is None else min(max_items, len(held_out.items))
    for i in range(n):
        clip = held_out.items[i].double()
        noise = torch.randn(clip.shape, generator=generator, dtype=clip.dtype) * clip.std()
        for name, value in resynthesis_scores(clip, noise, sample_rate).items():
            scores.setdefault(name, []).append(value)
    return {k: statistics.fmean(v) for k, v in scores.items()}


def _write_samples(
    entry: Entry, model: torch.nn.Module, held_out: HeldOut, out: Path, temperature: float | None
) -> None:
    """The first held-out clip resynthesised (wav + spectrogram), or a grid of samples."""
    from sharedflow.train.samples import write_wav

    out.mkdir(parents=True, exist_ok=True)
    stem = entry.name.replace("/", "_")
    if entry.modality == "audio":
        clip = held_out.items[0][: 4 * model.sample_rate].float()
        audio = model.resynthesize(clip[None], temperature)[0].float()
        write_wav(out / "original.wav", clip, model.sample_rate)
        write_wav(out / f"{stem}.wav", audio, model.sample_rate)  # reports any clipping
        _spectrograms(clip, audio, model.sample_rate, entry.name, out / f"{stem}.png")
    else:
        from sharedflow.data.images import save_grid

        real = torch.stack([held_out.items[i][0] for i in range(min(16, len(held_out.items)))])
        save_grid(real, out / "real.png")
        model.write_sample_grid(out / f"{stem}.png")


def _spectrograms(
    clip: torch.Tensor, audio: torch.Tensor, sample_rate: int, title: str, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    for ax, signal, name in zip(axes, (clip, audio), ("original", title), strict=True):
        window = torch.hann_window(1024, dtype=signal.dtype)
        spec = torch.stft(signal, 1024, 256, window=window, return_complex=True).abs()
        db = 20 * torch.log10(spec.clamp(1e-5))
        ax.imshow(
            db.numpy(),
            origin="lower",
            aspect="auto",
            vmin=float(db.max()) - 80,
            extent=(0, len(signal) / sample_rate, 0, sample_rate / 2000),
            cmap="magma",
        )
        ax.set_ylim(0, min(sample_rate / 2000, 4))  # the harmonics live below 4 kHz
        ax.set_ylabel("kHz")
        ax.set_title(name, fontsize=9)
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


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
            for source in data_sources or [None]:
                overrides = {"source": source} if source else {}
                sets[source or "the first entry's held-out data"] = held_out_set(config, overrides)
        for label, held_out in sets.items():
            kind = "audio" if hasattr(held_out.items, "sample_rate") else "image"
            if kind != entry.modality:
                raise ValueError(
                    f"{entry.name}: an {entry.modality} model in a comparison of {kind} models "
                    f"(held out: {label})"
                )
            entry.add(label, _score(model, deployed, held_out, max_items, temperature))
        if i == 0:
            first = next(iter(sets.values()))
            entry.params = parameter_report(model)
            entry.speed, entry.speed_unit = _speed(deployed, first.items)
            _write_samples(entry, deployed, first, out / "samples", temperature)
        finished = _run_dir(Path(run)) / "finished.json"
        record = json.loads(finished.read_text()) if finished.is_file() else {}
        entry.train_seconds.append(float(record.get("train_seconds", float("nan"))))


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
) -> list[Entry]:
    """Train (or reuse) and evaluate every entry; write the tables, plots and samples.

    ``temperature``: the vocoders' resynthesis temperature (default: each model's own)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    entries: list[Entry] = []
    sets: dict[str, HeldOut] = {}
    for name in names:
        entry = Entry(name)
        entries.append(entry)
        try:
            if progress:
                print(
                    f"[{time.strftime('%H:%M:%S')}] {name}: training {seeds} seed(s)", flush=True
                )
            entry.runs = _trained_runs(name, out, seeds, steps, minutes)
            if progress:
                print(f"[{time.strftime('%H:%M:%S')}] {name}: scoring", flush=True)
            _evaluate_entry(entry, sets, data, max_items, out, temperature)
        except Exception as error:  # one failed entry must not stop the comparison
            entry.error = f"{type(error).__name__}: {first_line(error)}"
            with (out / "errors.log").open("a") as log:
                log.write(f"{name}\n{traceback.format_exc()}\n")
    ok = [e for e in entries if not e.error]
    if ok and ok[0].modality == "audio":
        noise = Entry(NOISE, modality="audio")
        for label, held_out in sets.items():
            noise.add(label, _noise_floor(held_out, held_out.items.sample_rate, max_items))
        entries.append(noise)
    _write_tables(entries, sets, out, temperature)
    _plot([e for e in entries if e.runs], out, next((e for e in entries if e.name == NOISE), None))
    return entries


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


def _significance(entries: list[Entry], label: str, metric: str) -> dict[str, str]:
    """Per entry: "best", "n.s." (within the spreads of the best), or ""."""
    rows = {e.name: _mean_std(e.scores[label][metric]) for e in entries
            if e.runs and metric in e.scores.get(label, {})}  # fmt: skip
    rows = {k: v for k, v in rows.items() if v[0] == v[0]}
    if not rows:
        return {}
    sign = 1 if METRICS[metric].higher_is_better else -1
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


def _markdown_row(e: Entry, label: str, columns: list[str], marks: dict) -> str:
    if e.error:
        return f"| {e.name} | failed: {e.error} |"
    cells = []
    for m in columns:
        cell = _cell(*_mean_std(e.scores.get(label, {}).get(m, [])))
        mark = marks[m].get(e.name, "")
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
    modality = next((e.modality for e in entries if e.modality and not e.error), "audio")
    columns = COLUMNS[modality]
    rows, lines = [], []
    for label, held_out in (sets or {"(none)": None}).items():
        marks = {m: _significance(entries, label, m) for m in columns}
        lines += [
            f"Held out: {held_out.description if held_out else label}",
            "",
            "| entry | params | deploy | " + " | ".join(columns) + " | train s | speed |",
            "|---" * (len(columns) + 5) + "|",
            *[_markdown_row(e, label, columns, marks) for e in entries],
            "",
        ]
        rows += [row for e in entries for row in _csv_rows(e, label, marks)]
    seeds = max((len(e.runs) for e in entries), default=0)
    lines += [f"- {m}: {METRICS[m].unit}, "
              f"{'higher' if METRICS[m].higher_is_better else 'lower'} is better."
              for m in columns]  # fmt: skip
    lines += [
        f"- Mean ± standard deviation over {seeds} seed(s). **Bold**: the best entry; n.s.: its "
        "difference from the best is no larger than their spreads added (not significant)."
        + (" With one seed there is no spread to judge by." if seeds < 2 else ""),
        "- Params: training form (with weight norm, embeddings); deploy: weight norm removed, "
        "flow embeddings folded. Speed: synthesis of 1 s of held-out audio, or sampling.",
    ]
    if modality == "audio":
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
    modality = ok[0].modality if ok else "audio"
    metrics = ["ll", "pesq"] if modality == "audio" else ["bpd"]
    markers = {"independent": "o", "shared": "s", "decomposed": "^", "nanoflow": "*"}
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for e in ok:
            label = next(iter(e.scores))
            mean, std = _mean_std(e.scores[label].get(metric, []))
            x = e.params["training"]["total"]
            ax.errorbar(x, mean, yerr=0 if std != std else std, fmt=markers.get(e.sharing, "o"),
                        markersize=9, label=f"{e.family} / {e.sharing}")  # fmt: skip
            ax.annotate(e.name.split("/")[-1], (x, mean), fontsize=7,
                        textcoords="offset points", xytext=(5, 5))  # fmt: skip
        if floor is not None and metric in next(iter(floor.scores.values()), {}):
            level = _mean_std(next(iter(floor.scores.values()))[metric])[0]
            ax.axhline(level, color="grey", linestyle="--", linewidth=1, label=NOISE)
        ax.set_xscale("log")
        ax.set_xlabel("parameters (training form)")
        ax.set_ylabel(METRICS[metric].unit)
        ax.grid(alpha=0.3)
        if ok:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "quality_vs_params.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    key = "val_" + COLUMNS[modality][0]
    for e in ok:
        path = _run_dir(Path(e.runs[0])) / "metrics.jsonl"
        if not path.is_file():
            continue
        points = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        points = [(p["step"], p[key]) for p in points if key in p]
        if points:
            ax.plot(*zip(*points, strict=True), marker=".", label=e.name.split("/")[-1])
    ax.set_xlabel("step")
    ax.set_ylabel(f"held-out {METRICS[COLUMNS[modality][0]].unit}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "validation_curves.png", dpi=120)
    plt.close(fig)
