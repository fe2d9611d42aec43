"""``sharedflow compare``: parameters against quality, NanoFlow's central trade-off.

Each entry (a recipe, a run directory or a checkpoint) is trained for every seed (or its
finished run reused; an interrupted run resumes), then every model is evaluated on the same
held-out data (the first entry's of its modality): test LL in nats per sample for audio, bits
per dim for images, plus synthesis or sampling speed. Results go to ``results.csv``,
``results.md`` and two plots. An entry that fails is reported as failed and the rest go on.
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
from omegaconf import OmegaConf

from sharedflow.api import load_model, parameter_report
from sharedflow.recipes import RecipeError, build, list_recipes
from sharedflow.sharing import deploy
from sharedflow.train.checkpoint import resolve_checkpoint
from sharedflow.train.evaluate import evaluate
from sharedflow.train.run import train

__all__ = ["PRESETS", "Entry", "compare"]

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
METRIC = {
    "audio": ("ll", "test LL (nats/sample, higher is better)"),
    "image": ("bpd", "bits/dim (lower is better)"),
}


@dataclass
class Entry:
    """One row of the comparison."""

    name: str
    family: str = ""
    sharing: str = ""
    modality: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    quality: list[float] = field(default_factory=list)
    train_seconds: list[float] = field(default_factory=list)
    speed: float = float("nan")
    speed_unit: str = ""
    runs: list[Path] = field(default_factory=list)
    error: str = ""


def _describe(config: dict[str, Any]) -> tuple[str, str]:
    model = config["model"]
    return model["_target_"].rsplit(".", 1)[-1], model.get("sharing", "independent")


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
def _speed(model: torch.nn.Module, data: Any) -> tuple[float, str]:
    """Synthesis (kHz of 1 s of held-out audio) or sampling (images/s) speed, deploy form."""
    model = deploy(model)
    if model.modality == "audio":
        mel = model.mel(data.val[0][: model.sample_rate][None])
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


def _evaluate_entry(
    entry: Entry, runs: list[Path], held_out: dict[str, Any], max_items: int | None
) -> None:
    """Quality of each run on the comparison's held-out set (set by its first entry)."""
    for i, run in enumerate(runs):
        model, config = load_model(run)
        entry.family, entry.sharing = _describe(config)
        entry.modality = model.modality
        if not held_out:
            data = build(OmegaConf.create(config["data"]))
            held_out.update(owner=entry.name, modality=entry.modality, data=data)
        if entry.modality != held_out["modality"]:
            raise ValueError(
                f"{entry.name}: an {entry.modality} model in a comparison of "
                f"{held_out['modality']} models (first: {held_out['owner']})"
            )
        if len(held_out["data"].val) == 0:
            raise ValueError(f"{entry.name}: the held-out set of {held_out['owner']} is empty")
        if i == 0:
            entry.params = parameter_report(model)
            entry.speed, entry.speed_unit = _speed(model, held_out["data"])
        result = evaluate(model, held_out["data"].val, "cpu", max_items)
        entry.quality.append(result[METRIC[entry.modality][0]])
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
) -> list[Entry]:
    """Train (or reuse) and evaluate every entry; write the tables and plots under ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    entries: list[Entry] = []
    held_out: dict[str, Any] = {}
    for name in names:
        entry = Entry(name)
        entries.append(entry)
        try:
            entry.runs = _trained_runs(name, out, seeds, steps, minutes)
            _evaluate_entry(entry, entry.runs, held_out, max_items)
        except Exception as error:  # one failed entry must not stop the comparison
            entry.error = f"{type(error).__name__}: {str(error).strip().splitlines()[0]}"
            (out / "errors.log").open("a").write(f"{name}\n{traceback.format_exc()}\n")
    modalities = {e.modality for e in entries if e.modality}
    if len(modalities) > 1:
        first = next(e for e in entries if e.modality)
        for e in entries:
            if e.modality and e.modality != first.modality and not e.error:
                e.error = (
                    f"{e.name}: a {e.modality} model cannot be compared with the "
                    f"{first.modality} model {first.name}"
                )
    _write_tables(entries, out)
    _plot(entries, out)
    return entries


def _fmt_quality(values: list[float]) -> str:
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def _write_tables(entries: list[Entry], out: Path) -> None:
    header = [
        "entry",
        "family",
        "sharing",
        "params",
        "shared",
        "per_step",
        "embedding",
        "deploy_params",
        "metric",
        "quality_mean",
        "quality_std",
        "seeds",
        "train_seconds",
        "speed",
        "speed_unit",
        "status",
    ]
    rows = []
    for e in entries:
        training, deployed = e.params.get("training", {}), e.params.get("deploy", {})
        per_step = training.get("per_step") or [0]
        metric = METRIC.get(e.modality, ("", ""))[0]
        q = e.quality
        rows.append(
            [
                e.name,
                e.family,
                e.sharing,
                training.get("total", ""),
                training.get("shared", ""),
                max(per_step),
                training.get("embedding", ""),
                deployed.get("total", ""),
                metric,
                statistics.mean(q) if q else "",
                statistics.stdev(q) if len(q) > 1 else "",
                len(q),
                statistics.mean(e.train_seconds) if e.train_seconds else "",
                e.speed,
                e.speed_unit,
                f"failed: {e.error}" if e.error else "ok",
            ]
        )
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    lines = [
        "| entry | sharing | params | shared | per step | deploy | quality | train s | speed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for e, row in zip(entries, rows, strict=True):
        if e.error:
            lines.append(f"| {e.name} | | | | | | failed: {e.error} | | |")
            continue
        lines.append(
            f"| {e.name} | {e.sharing} | {row[3]:,} | {row[4]:,} | {row[5]:,} | "
            f"{row[7]:,} | {_fmt_quality(e.quality)} {row[8]} | {row[12]:.0f} | "
            f"{e.speed:.2f} {e.speed_unit} |"
        )
    notes = sorted({METRIC[e.modality][1] for e in entries if e.modality})
    lines += [
        "",
        *[f"Quality: {n}." for n in notes],
        "Params: training form (with weight norm, embeddings); deploy: weight norm removed, "
        "flow embeddings folded. Per step: the largest per-step estimator part.",
    ]
    (out / "results.md").write_text("\n".join(lines) + "\n")


def _plot(entries: list[Entry], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [e for e in entries if not e.error and e.quality]
    markers = {"independent": "o", "shared": "s", "decomposed": "^", "nanoflow": "*"}
    fig, ax = plt.subplots(figsize=(6, 4))
    for e in ok:
        q = statistics.mean(e.quality)
        err = statistics.stdev(e.quality) if len(e.quality) > 1 else 0.0
        ax.errorbar(
            e.params["training"]["total"],
            q,
            yerr=err,
            fmt=markers.get(e.sharing, "o"),
            markersize=9,
            label=f"{e.family} / {e.sharing}",
        )
        ax.annotate(
            e.name.split("/")[-1],
            (e.params["training"]["total"], q),
            fontsize=7,
            textcoords="offset points",
            xytext=(5, 5),
        )
    ax.set_xscale("log")
    ax.set_xlabel("parameters (training form)")
    modality = ok[0].modality if ok else "audio"
    ax.set_ylabel(METRIC[modality][1])
    ax.grid(alpha=0.3)
    if ok:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "quality_vs_params.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for e in ok:
        run = e.runs[0]
        metrics = run if run.is_dir() and not run.name.startswith("ckpt-") else run.parent
        path = metrics / "metrics.jsonl"
        if not path.is_file():
            continue
        key = f"val_{METRIC[e.modality][0]}"
        points = [json.loads(line) for line in path.read_text().splitlines()]
        points = [(p["step"], p[key]) for p in points if key in p]
        if points:
            ax.plot(*zip(*points, strict=True), marker=".", label=e.name.split("/")[-1])
    ax.set_xlabel("step")
    ax.set_ylabel(f"held-out {METRIC[modality][1]}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "validation_curves.png", dpi=120)
    plt.close(fig)
