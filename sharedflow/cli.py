"""The ``sharedflow`` command line: thin wrappers over ``sharedflow.api``, one per command.

Every command has ``--help``; bad input ends with a one-line reason and a non-zero exit.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from sharedflow.checkpoint import latest_checkpoint
from sharedflow.errors import first_line

DTYPES = ("fp32", "bf16", "fp16")

__all__ = ["main"]


class CommandError(Exception):
    """A user-facing failure: printed as one line."""


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors on one line (``--help`` still shows the usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# -- commands -------------------------------------------------------------------------------------
def _demo(args: argparse.Namespace) -> int:
    from sharedflow.demo import format_results, run_demo

    print(f"Fitting a 2-D ring of Gaussians with 8 coupling steps, {args.iters} iterations each.")
    print(format_results(run_demo(n_iters=args.iters, seed=args.seed)))
    print("NLL is held-out negative log-likelihood in nats per dimension (lower is better).")
    return 0


def _recipes(args: argparse.Namespace) -> int:
    from sharedflow.recipes import list_recipes

    print("\n".join(list_recipes()))
    return 0


def _train(args: argparse.Namespace) -> int:
    if args.multirun:
        from sharedflow.sweep import multirun

        multirun(args.recipe, args.overrides)
        return 0
    from sharedflow.train.run import train

    _summarise(train(args.recipe, args.overrides))
    return 0


def _summarise(run_dir: Path) -> None:
    """Where a run's outputs are, and its held-out metric at the start and at the end."""
    from sharedflow.train.loop import read_metrics

    held_out = [r for r in read_metrics(run_dir) if any(k.startswith("val_") for k in r)]
    print(f"run directory: {run_dir}")
    if held_out:
        first, last = held_out[0], held_out[-1]
        for key in (k for k in last if k.startswith("val_")):
            print(
                f"held-out {key[4:]}: {first.get(key, float('nan')):.4f} at step "
                f"{first['step']} -> {last[key]:.4f} at step {last['step']}"
            )
    samples = sorted((run_dir / "samples").glob("step-*"))
    if samples:
        print(f"samples: {samples[-1]}")
    print(f"checkpoint: {latest_checkpoint(run_dir)}")


def _params(args: argparse.Namespace) -> int:
    from sharedflow.api import build_model, parameter_report

    report = parameter_report(build_model(args.recipe, args.overrides, device="meta"))
    if args.json:
        print(json.dumps({"recipe": args.recipe, **report}, indent=2))
        return 0
    print(f"{args.recipe}")
    print(f"{'':>12} {'training':>14} {'deploy':>14}")
    for key in ("total", "shared", "per_step", "embedding", "other"):
        cells = []
        for form in ("training", "deploy"):
            value = report[form][key]
            if key == "per_step":
                steps = sorted(set(value))
                value = f"{'/'.join(f'{v:,}' for v in steps)} x{len(value)}" if value else "0"
            else:
                value = f"{value:,}"
            cells.append(f"{value:>14}")
        print(f"{key.replace('_', ' '):>12} {' '.join(cells)}")
    return 0


def _data_overrides(pairs: list[str]) -> dict[str, Any]:
    overrides = {}
    for pair in pairs:
        if "=" not in pair:
            raise CommandError(f"expected key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        key = key.removeprefix("data.")
        overrides[key] = None if value.lower() == "null" else _parse_value(value)
    return overrides


def _parse_value(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _precision(
    args: argparse.Namespace, stream: Any = None, gemm: tuple[int, int, int] | None = None
) -> str:
    """The precision ``--dtype`` asks for here (``auto``: bf16 only where native and measured
    faster than fp32 on ``gemm``, the workload's own product), said once."""
    from sharedflow.precision import Capabilities, choose

    measure = args.dtype in ("auto", "bf16")
    capabilities = Capabilities.detect(args.device, measure, gemm)
    precision, warning = choose(args.dtype, capabilities)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"precision: {precision} ({capabilities.describe()})", file=stream or sys.stdout)
    return precision


def _evaluate(args: argparse.Namespace) -> int:
    from sharedflow.api import evaluate_checkpoint
    from sharedflow.audio.quality import METRICS

    # With --json, stdout holds the JSON alone.
    stream = sys.stderr if args.json else None

    def precision(model: Any, n_samples: int) -> str:
        return _precision(args, stream, model.generation_gemm(n_samples))

    result, scored = evaluate_checkpoint(
        args.checkpoint,
        _data_overrides(args.overrides),
        args.ema,
        args.average,
        args.max_items,
        args.device,
        args.resynthesis,
        args.temperature,
        precision,
    )
    if args.fid is not None:
        result["fid"] = _fid(args)
    if args.json:
        print(json.dumps({"checkpoint": str(args.checkpoint), "scored": scored, **result}))
    else:
        print(scored)
        for name, value in result.items():
            print(f"{name}: {value:.4f} {METRICS[name].unit if name in METRICS else ''}")
    return 0


def _fid(args: argparse.Namespace) -> float:
    from sharedflow.api import held_out_set, load_model
    from sharedflow.fid import load_extractor, sample_fid
    from sharedflow.models.image import ImageFlow

    extractor = load_extractor(args.fid)
    model, config = load_model(args.checkpoint, args.ema, args.average, args.device)
    if not isinstance(model, ImageFlow):
        raise CommandError("FID is for image models")
    images = held_out_set(config, _data_overrides(args.overrides)).items
    return sample_fid(model, images, extractor, args.fid_samples)


def _read_noise(path: str, inputs: list[tuple[str, Any]]) -> Any:
    """The ``--noise`` latent: a float ``.npy`` of shape ``(1, samples)``, for one mel."""
    import numpy as np
    import torch

    if len(inputs) != 1 or len(inputs[0][1]) != 1:
        raise CommandError("--noise goes with exactly one input holding one mel")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise CommandError(f"--noise {path}: not a readable .npy array ({error})") from None
    if array.ndim != 2 or array.shape[0] != 1 or not np.issubdtype(array.dtype, np.floating):
        raise CommandError(
            f"--noise {path}: expected a float array (1, samples), got {array.dtype} {array.shape}"
        )
    return torch.from_numpy(array.astype(np.float32))


def _synthesize(args: argparse.Namespace) -> int:
    import torch

    from sharedflow.api import load_model, synthesize
    from sharedflow.audio.denoise import Denoiser
    from sharedflow.audio.io import read_mel_input, write_wav
    from sharedflow.models.vocoder import Vocoder
    from sharedflow.sharing import deploy

    model, _ = load_model(args.checkpoint, args.ema, args.average, args.device)
    if not isinstance(model, Vocoder):
        raise CommandError(f"{args.checkpoint}: not a vocoder checkpoint ('sharedflow sample')")
    model = deploy(model) if args.deploy else model
    out = _output_dir(args.out)
    stems = [Path(path).stem for path in args.inputs]
    if len(set(stems)) < len(stems):
        raise CommandError(f"inputs share a file name, so their outputs would collide: {stems}")
    # Every input is read before anything is synthesised: a bad one costs no work.
    inputs = [(path, read_mel_input(Path(path), model, args.resample)) for path in args.inputs]
    noise = _read_noise(args.noise, inputs) if args.noise else None
    from sharedflow.precision import TORCH_DTYPES

    gemm = model.generation_gemm(inputs[0][1][0][1])  # the first mel's length
    model.flow.to(TORCH_DTYPES[_precision(args, gemm=gemm)])  # the mel front end stays float32
    denoiser = Denoiser(model) if args.denoise > 0 else None  # one bias spectrum per model
    total_audio = total_time = 0.0
    for path, mels in inputs:
        for i, (mel, length) in enumerate(mels):
            start = time.perf_counter()
            audio = synthesize(
                model, mel, args.temperature, denoiser, args.denoise, length, noise
            )[0]
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
            suffix = f"-{i}" if len(mels) > 1 else ""
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                target = write_wav(
                    out / f"{Path(path).stem}{suffix}.wav", audio, model.sample_rate
                )
            for warning in caught:
                print(f"warning: {warning.message}", file=sys.stderr)
            seconds = audio.shape[-1] / model.sample_rate
            total_audio, total_time = total_audio + seconds, total_time + elapsed
            print(
                f"{target}: {seconds:.2f} s of audio in {elapsed:.2f} s "
                f"(real-time factor {elapsed / seconds:.2f})"
            )
    print(
        f"real-time factor overall: {total_time / max(total_audio, 1e-9):.2f} "
        "(seconds of compute per second of audio)"
    )
    return 0


def _sample(args: argparse.Namespace) -> int:
    import torch

    from sharedflow.api import load_model
    from sharedflow.data.images import save_grid
    from sharedflow.models.image import ImageFlow, Jacobi

    out = _image_path(args.out)
    individual = _output_dir(args.individual) if args.individual else None
    model, _ = load_model(args.checkpoint, args.ema, args.average, args.device)
    if not isinstance(model, ImageFlow):
        raise CommandError(f"{args.checkpoint}: not an image model ('sharedflow synthesize')")
    labels = None
    if args.label:
        labels = torch.tensor([args.label[i % len(args.label)] for i in range(args.n)])
    jacobi = Jacobi(args.jacobi, None, args.chunk) if args.jacobi else None
    from sharedflow.precision import autocast

    precision = _precision(args)
    start = time.perf_counter()
    with autocast(precision, args.device):
        result = model.generate(
            args.n,
            labels,
            temperature=args.temperature,
            denoise=args.denoise,
            jacobi=jacobi,
            **_guidance(args),
        )
    elapsed = time.perf_counter() - start
    grid = save_grid(result.images, out)
    print(f"{grid}: {args.n} samples in {elapsed:.2f} s")
    if individual is not None:
        for i, image in enumerate(result.images):
            save_grid(image[None], individual / f"{i:04d}.png", 1)
        print(f"individual images: {individual}")
    if result.iterations is not None:
        total = sum(map(sum, result.iterations))
        print(f"Jacobi iterations per block: {result.iterations} ({total} parallel passes)")
    return 0


def _guidance(args: argparse.Namespace) -> dict[str, Any]:
    """TarFlow's sampling options, the ones given (a model without them refuses any)."""
    given = {"guidance": args.guidance, "attn_temp": args.attn_temp, "annealed": args.annealed}
    defaults = {"guidance": None, "attn_temp": 1.0, "annealed": False}
    return {k: v for k, v in given.items() if v != defaults[k]}


def _compare(args: argparse.Namespace) -> int:
    from sharedflow.compare import PRESETS, compare

    overrides = [e for e in args.entries if "=" in e and not Path(e).exists()]
    given = [e for e in args.entries if e not in overrides]
    names = [n for name in given for n in PRESETS.get(name, [name])]
    if not names:
        raise CommandError("compare needs at least one recipe, run or preset besides overrides")
    start = time.perf_counter()
    entries = compare(
        names,
        args.out,
        args.steps,
        args.minutes,
        args.seeds,
        args.max_items,
        args.data,
        True,
        args.temperature,
        overrides,
        args.jobs,
    )
    out = Path(args.out)
    print((out / "results.md").read_text())
    print(
        f"wrote {out / 'results.csv'}, {out / 'results.md'}, {out / 'quality_vs_params.png'}, "
        f"{out / 'training_curves.png'} and {out / 'samples'}/ "
        f"in {(time.perf_counter() - start) / 60:.1f} min"
    )
    return 0 if any(not e.error for e in entries) else 2


def _export(args: argparse.Namespace) -> int:
    from sharedflow.api import load_model
    from sharedflow.export import export

    model, config = load_model(args.checkpoint, args.ema, args.average, args.device)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporters' own deprecation chatter
        out = export(model, config, args.out, args.format, args.graph, args.dtype, args.denoise)
    print(f"wrote {out} ({args.format}, {args.dtype}) in {time.perf_counter() - start:.1f} s")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from sharedflow.convert import convert

    overrides = {k.removeprefix("model."): v for k, v in _data_overrides(args.overrides).items()}
    path = convert(args.kind, args.source, args.out, overrides, args.config)
    print(f"converted {args.source} ({args.kind}) to {path}")
    return 0


def _output_dir(path: str) -> Path:
    """An output folder that exists or could be made, and could be written: checked before any
    work, creating nothing (a run that fails later leaves no empty folder behind)."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {out}: exists and is not a folder")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise CommandError(f"--out {out}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CommandError(f"--out {out}: {existing} cannot be written")
    return out


def _image_path(path: str) -> Path:
    """A grid path whose folder can be written and whose suffix names an image format."""
    from PIL import Image

    out = Path(path)
    if out.suffix.lower() not in Image.registered_extensions():
        raise CommandError(f"--out {out}: not an image file name (use .png or .jpg)")
    _output_dir(str(out.parent))
    if out.is_dir():
        raise CommandError(f"--out {out}: is a folder")
    return out


def _finite_non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from error
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a finite number >= 0")
    return value


def _whole(least: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from error
        if value < least:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number >= {least}")
        return value

    return parse


_positive_int, _non_negative_int = _whole(1), _whole(0)


def _device(name: str) -> str:
    """A ``--device`` value this build of torch can use."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise argparse.ArgumentTypeError(f"{name!r} is not a device ({error})") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(
            f"{name!r}: this torch build has no usable CUDA device (use cpu)"
        )
    return name


# -- the parser -----------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sharedflow",
        description="Normalizing flows for audio and images, with NanoFlow parameter sharing.",
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help: str, run: Callable[[argparse.Namespace], int]) -> Any:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(run=run)
        return sub

    demo = command(
        "demo", "fit a toy flow in every NanoFlow sharing mode; print params and NLL", _demo
    )
    demo.add_argument("--iters", type=int, default=500, help="training iterations per mode")
    demo.add_argument("--seed", type=int, default=0)

    recipes = command("recipes", "list the recipes that train and params accept", _recipes)

    train = command(
        "train", "train a recipe (resumes when its run directory has checkpoints)", _train
    )
    train.add_argument("recipe", help="a recipe name, e.g. audio/waveflow-tiny")
    train.add_argument("overrides", nargs="*", help="hydra overrides, e.g. trainer.max_steps=10")
    train.set_defaults(trailing="overrides")
    train.add_argument(
        "-m", "--multirun", action="store_true", help="sweep: key=a,b runs one job per combination"
    )

    params = command(
        "params", "parameter counts: total, shared, per step, embedding, deploy", _params
    )
    params.add_argument("recipe")
    params.add_argument("overrides", nargs="*")
    params.set_defaults(trailing="overrides")
    params.add_argument("--json", action="store_true")

    def checkpoint_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("checkpoint", help="a checkpoint directory, or a run (its latest)")
        sub.add_argument("--ema", action="store_true", help="use the EMA weights")
        sub.add_argument(
            "--average",
            type=_non_negative_int,
            default=0,
            metavar="N",
            help="average the run's last N checkpoints",
        )
        sub.add_argument("--device", type=_device, default="cpu")

    def precision_option(sub: argparse.ArgumentParser, what: str) -> None:
        sub.add_argument(
            "--dtype",
            choices=["auto", *DTYPES],
            default="auto",
            help=f"{what}; auto (default): bf16 where it is native (CUDA 8.0+, or a CPU with "
            "AVX512-BF16 or AMX where a GEMM probe finds it faster than fp32), else fp32",
        )

    evaluate = command("evaluate", "held-out test LL (audio) or bits per dim (images)", _evaluate)
    checkpoint_options(evaluate)
    evaluate.add_argument("overrides", nargs="*", help="data settings, e.g. source=path/to/wavs")
    evaluate.set_defaults(trailing="overrides")
    evaluate.add_argument("--max-items", type=_positive_int, default=None)
    evaluate.add_argument(
        "--resynthesis",
        "--quality",
        action="store_true",
        help="also the quality of samples: vocoders' PESQ, STOI, MCD, MR-STFT, log-mel L1 and "
        "periodicity error of resynthesised clips; class-conditional models of the built-in "
        "shapes, the shape accuracy of their samples (seeded: reruns print the same figures)",
    )
    evaluate.add_argument(
        "--temperature",
        type=_finite_non_negative,
        default=None,
        help="resynthesis or sampling temperature (default: the model's)",
    )
    evaluate.add_argument(
        "--fid",
        metavar="INCEPTION",
        help="image models: FID of samples, with a local TorchScript Inception feature extractor",
    )
    evaluate.add_argument("--fid-samples", type=int, default=1000)
    evaluate.add_argument("--json", action="store_true")
    precision_option(evaluate, "the resynthesis precision (the LL is always summed in fp32)")

    synth = command("synthesize", "wav or mel (.npy/.npz/.pt) in, 16-bit wav out", _synthesize)
    checkpoint_options(synth)
    synth.add_argument("inputs", nargs="+", metavar="INPUT")
    synth.add_argument("--out", required=True, help="output directory")
    synth.add_argument(
        "--temperature",
        "--sigma",
        type=_finite_non_negative,
        default=None,
        help="scale of the latent noise (default: the model's; WaveGlow 0.6, WaveFlow 1.0)",
    )
    synth.add_argument(
        "--denoise",
        type=_finite_non_negative,
        default=0.0,
        metavar="STRENGTH",
        help="remove the model's bias spectrum (about 0.1)",
    )
    synth.add_argument(
        "--deploy",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fold weight norm and flow embeddings first (default on)",
    )
    synth.add_argument(
        "--resample",
        action="store_true",
        help="convert a wav at another sample rate to the model's (librosa), not refuse it",
    )
    precision_option(synth, "the flow's precision")
    synth.add_argument(
        "--noise",
        metavar="FILE.npy",
        help="the N(0, 1) latent to use, (1, samples), instead of drawing one (one input; the "
        "same draws as an exported graph's noise input, divided by the temperature)",
    )

    exp = command(
        "export",
        "write a trained or converted flow's synthesis, sampling or bits-per-dim graph as ONNX "
        "or a torch.export program (deploy form, dynamic batch and frames)",
        _export,
    )
    checkpoint_options(exp)
    exp.add_argument("--format", choices=["onnx", "exported-program"], default="onnx")
    exp.add_argument("--out", required=True, help="the file to write, e.g. vocoder.onnx")
    exp.add_argument("--dtype", choices=DTYPES, default="fp32")
    exp.add_argument(
        "--graph",
        choices=["synthesize", "sample", "bpd"],
        help="vocoders: synthesize (default); image flows: sample (default) or bpd",
    )
    exp.add_argument(
        "--denoise",
        type=_finite_non_negative,
        default=0.0,
        help="include the denoiser at this strength (vocoders)",
    )
    sample = command(
        "sample", "image samples as a PNG grid (guidance, temperature, denoising)", _sample
    )
    checkpoint_options(sample)
    sample.add_argument("--n", type=_positive_int, default=16)
    precision_option(sample, "the sampling precision (autocast)")
    sample.add_argument("--out", required=True, help="the grid, e.g. grid.png")
    sample.add_argument("--individual", metavar="DIR", help="also write each image here")
    sample.add_argument("--label", type=int, nargs="*", help="classes, cycled over the samples")
    sample.add_argument(
        "--guidance", type=float, help="guidance weight w (default: the recipe's sampling)"
    )
    sample.add_argument("--annealed", action="store_true", help="ramp w over the tokens")
    sample.add_argument(
        "--attn-temp",
        type=float,
        default=1.0,
        help="attention temperature of the unconditional branch",
    )
    sample.add_argument(
        "--temperature",
        type=_finite_non_negative,
        help="the base's temperature (default: the recipe's sampling)",
    )
    sample.add_argument(
        "--denoise",
        action=argparse.BooleanOptionalAction,
        help="a score-based denoising step, or none (default: the recipe's sampling)",
    )
    sample.add_argument(
        "--jacobi", type=float, metavar="TOL", help="parallel Jacobi inverse with this tolerance"
    )
    sample.add_argument("--chunk", type=int, help="Gauss-Seidel-Jacobi chunk (tokens)")

    comp = command(
        "compare", "train and evaluate several recipes: parameters vs quality", _compare
    )
    comp.add_argument(
        "entries",
        nargs="+",
        help="recipes, run directories, checkpoints, folders of seed-N runs (an earlier "
        "comparison's runs/ENTRY), or a preset: audio-tiny, image-tiny; "
        "and KEY=VALUE overrides for every recipe trained, as with train (runs trained here "
        "validate once, at the end, and log every step: trainer.val_every=0 "
        "trainer.log_every=1 unless overridden)",
    )
    comp.set_defaults(trailing="entries")
    comp.add_argument("--out", required=True)
    budget = comp.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=_positive_int, help="training steps per entry")
    budget.add_argument("--minutes", type=float, help="training minutes per entry")
    comp.add_argument("--seeds", type=_positive_int, default=1)
    comp.add_argument(
        "--jobs",
        type=_positive_int,
        default=None,
        help="runs trained at a time, each in a process of its own with one thread "
        "(trainer.threads=1 unless overridden; default: one per core; 1: one after another, "
        "in this process); the figures do not depend on it",
    )
    comp.add_argument(
        "--max-items", type=_positive_int, default=None, help="held-out items to evaluate"
    )
    comp.add_argument(
        "--temperature",
        type=_finite_non_negative,
        default=None,
        help="vocoders' resynthesis temperature (default: each model's own)",
    )
    comp.add_argument(
        "--data",
        action="append",
        metavar="SOURCE",
        help="a held-out set to score every entry on (repeatable): a folder, file list, "
        "LJSpeech tree, image folder or array, or own: the first entry's held-out data "
        "(the default)",
    )

    from sharedflow.convert import KINDS

    conv = command(
        "convert",
        "import a reference checkpoint (NVIDIA WaveGlow, L0SG WaveFlow / NanoFlow and its Glow "
        "image models, apple TarFlow)",
        _convert,
    )
    conv.epilog = "kinds and the configuration file each reads with --config: " + "; ".join(
        f"{kind}: {family.config_file}" for kind, family in KINDS.items()
    )
    conv.add_argument("kind", choices=list(KINDS))
    conv.add_argument("source", help="the reference checkpoint (.pt, .pth or .safetensors)")
    conv.add_argument("out", help="directory for the sharedflow checkpoint")
    conv.add_argument(
        "--config",
        metavar="FILE",
        help="the reference's own configuration file (JSON), for the settings the weights do "
        "not record, such as WaveFlow's height",
    )
    conv.add_argument(
        "overrides", nargs="*", help="model settings the weights cannot tell, e.g. height=16"
    )
    conv.set_defaults(trailing="overrides")
    _add_recipe_dirs([recipes, train, params, comp])
    return parser


USER_ERRORS = (CommandError, ValueError, OSError, KeyError, RuntimeError)


def _add_recipe_dirs(parsers: Sequence[argparse.ArgumentParser]) -> None:
    for sub in parsers:
        sub.add_argument(
            "--recipes",
            action="append",
            default=[],
            metavar="DIR",
            help="a folder of your own recipes, in the shipped layout (repeatable; also "
            "$SHAREDFLOW_RECIPES)",
        )


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv``; words after the options join the command's list of overrides or entries.

    ``compare audio-tiny --steps 5 optim.lr=1e-3`` reads as ``compare audio-tiny optim.lr=1e-3
    --steps 5``. An unknown option is still an error.
    """
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    trailing = getattr(args, "trailing", None)
    if extra and (trailing is None or any(word.startswith("-") for word in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        getattr(args, trailing).extend(extra)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    if getattr(args, "recipes", None):  # composed recipes, and sweep jobs, read the variable
        from sharedflow.recipes import USER_RECIPES

        given = [str(Path(d).expanduser().resolve()) for d in args.recipes]
        os.environ[USER_RECIPES] = os.pathsep.join(
            [*given, *filter(None, os.environ.get(USER_RECIPES, "").split(os.pathsep))]
        )
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print(f"sharedflow {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (| head): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as error:
        if args.debug:
            raise
        if isinstance(error, USER_ERRORS):
            print(f"sharedflow {args.command}: error: {first_line(error)}", file=sys.stderr)
            return 2
        print(
            f"sharedflow {args.command}: internal error: {type(error).__name__}: "
            f"{first_line(error)} (run 'sharedflow --debug {args.command} ...' for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
