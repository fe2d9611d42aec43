"""Every command on a table of bad inputs: exit code 2, one line on stderr, no traceback, and
the inputs and existing checkpoints left as they were."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sharedflow.cli import main

FAST = ["trainer.max_steps=1", "trainer.val_items=1", "trainer.progress=false"]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    audio, image = root / "audio-run", root / "image-run"
    plain = ["model.source_harmonics=0", "model.source_mean=false", "model.source_aligned=false"]
    plain += ["model.source_noise=false"]  # the tiny recipe without its source: 80-row mels
    assert main(["train", "audio/waveflow-tiny", f"run_dir={audio}", *FAST, *plain]) == 0
    assert main(["train", "image/glow-tiny", f"run_dir={image}", *FAST]) == 0
    paths = {"audio": audio, "image": image, "root": root}
    paths["file"] = root / "a-file"
    paths["file"].write_text("not a folder")
    np.save(root / "mel.npy", np.zeros((80, 8), dtype="f4") - 5)
    nan_mel = np.zeros((80, 8), dtype="f4")
    nan_mel[0, 0] = np.nan
    np.save(root / "nan-mel.npy", nan_mel)
    sf.write(root / "short.wav", np.zeros(200, dtype="f4"), 22050)
    nan_wav = np.zeros(4096, dtype="f4")
    nan_wav[7] = np.inf
    sf.write(root / "inf.wav", nan_wav, 22050, subtype="FLOAT")
    torch.save({"not": "a tensor"}, root / "dict.pt")
    weights = root / "garbage" / "model.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    truncated = root / "truncated" / "model.safetensors"
    truncated.parent.mkdir()
    truncated.write_bytes((audio / "ckpt-00000001" / "model.safetensors").read_bytes()[:300])
    nan_weights = root / "nan-weights"
    nan_weights.mkdir()
    for name in ("model.safetensors", "state.pt"):
        (nan_weights / name).write_bytes((audio / "ckpt-00000001" / name).read_bytes())
    from safetensors.torch import load_file

    stored = load_file(nan_weights / "model.safetensors")
    with safe_open(str(nan_weights / "model.safetensors"), "pt") as f:
        metadata = f.metadata()
    first = next(k for k, v in stored.items() if v.is_floating_point())
    stored[first] = torch.full_like(stored[first], float("nan"))
    save_file(stored, nan_weights / "model.safetensors", metadata)
    paths["nan-weights"] = nan_weights
    wrong = root / "wrong-structure"
    wrong.mkdir()
    save_file({"w": torch.zeros(1)}, wrong / "model.safetensors", {"config": json.dumps([1])})
    return paths


def _cases(f: dict[str, Path]) -> list[tuple[list[str], str]]:
    a, i, r = str(f["audio"]), str(f["image"]), f["root"]
    synth = ["synthesize", a, str(r / "mel.npy"), "--out", str(r / "out")]
    return [
        (["evaluate", str(r / "missing")], "no such checkpoint"),
        (["evaluate", a, "--device", "cuda"], "no usable CUDA device"),
        (["evaluate", a, "--average", "9"], "holds 1 checkpoint(s) to average"),
        (["evaluate", str(r / "garbage")], "not a readable safetensors file"),
        (["evaluate", str(r / "truncated")], "not a readable safetensors file"),
        (["evaluate", str(r / "wrong-structure")], "not a mapping with a 'model' node"),
        (["evaluate", a, f"source={r / 'missing'}"], "no such held-out data"),
        ([*synth[:2], str(r / "dict.pt"), *synth[3:]], "not a mel tensor"),
        ([*synth[:2], str(r / "nan-mel.npy"), *synth[3:]], "NaN"),
        ([*synth[:2], str(r / "inf.wav"), *synth[3:]], "NaN or infinite"),
        ([*synth[:2], str(r / "short.wav"), *synth[3:]], "shorter than one STFT window"),
        ([*synth, "--temperature", "nan"], "--temperature"),
        ([*synth, "--denoise", "-1"], "--denoise"),
        ([*synth[:4], str(f["file"])], "exists and is not a folder"),
        (["synthesize", i, str(r / "mel.npy"), "--out", str(r / "o")], "not a vocoder"),
        (["sample", i, "--out", str(r / "grid.xyz")], "not an image file name"),
        (["sample", i, "--out", str(r / "g.png"), "--guidance", "2"], "no Transformer"),
        (["sample", i, "--out", str(r / "g.png"), "--jacobi", "1e-3"], "no autoregressive"),
        (["sample", i, "--out", str(r / "g.png"), "--n", "0"], "--n"),
        (["sample", a, "--out", str(r / "g.png")], "not an image model"),
        (["train", "audio/waveflow-tiny", "trainer.precision=fp8"], "trainer.precision='fp8'"),
        (["train", "audio/waveflow-tiny", "trainer.max_steps=-1"], "trainer.max_steps=-1"),
        (["train", "audio/waveflow-tiny", "trainer.batch_size=0"], "trainer.batch_size=0"),
        (["train", "audio/waveflow-tiny", "model.channels=-1"], "channels=-1"),
        (["train", "audio/waveflow-tiny", "model.channels=abc"], "channels='abc'"),
        (["train", "image/glow-tiny", "data.source=x.npy"], "data.format=builtin"),
        (["train", "audio/waveflow-tiny", "optim.lr=abc", *FAST], "optim: cannot build Adam"),
        (["evaluate", str(f["nan-weights"])], "non-finite weights"),
        (["params", "audio/no-such"], "unknown recipe"),
        (["convert", "waveglow", str(r / "short.wav"), str(r / "conv")], "short.wav"),
        (["compare", "micro", "--out", str(r / "cmp"), "--seeds", "0"], "--seeds"),
        (
            ["compare", "micro", "--out", str(r / "cmp"), "--data", str(r / "missing")],
            "no such held-out data",
        ),
    ]


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def test_every_bad_input_is_one_line_and_changes_nothing(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(files["root"])  # a train recipe's default run_dir lands here
    before = _digest(files["root"])
    failures = []
    for args, message in _cases(files):
        try:
            code = main(args)
        except SystemExit as exit_info:  # argparse's own refusals
            code = exit_info.code
        err = capsys.readouterr().err.strip()
        if code != 2 or len(err.splitlines()) != 1 or message not in err or "Traceback" in err:
            failures.append(f"{args}: exit {code}, stderr {err!r}")
    assert not failures, "\n".join(failures)
    after = _digest(files["root"])
    assert {k: v for k, v in after.items() if k in before} == before  # inputs untouched


def test_an_unexpected_exception_is_one_line_naming_an_internal_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sharedflow.recipes

    def broken() -> list[str]:
        raise AttributeError("a bug")

    monkeypatch.setattr(sharedflow.recipes, "list_recipes", broken)
    assert main(["recipes"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [
        "sharedflow recipes: internal error: AttributeError: a bug (run 'sharedflow --debug "
        "recipes ...' for the traceback)"
    ]
    with pytest.raises(AttributeError):
        main(["--debug", "recipes"])


def test_a_full_disk_at_a_checkpoint_is_one_line_and_keeps_the_last_checkpoint(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import sharedflow.checkpoint as checkpoint

    run = files["root"] / "full-disk"
    assert main(["train", "audio/waveflow-tiny", f"run_dir={run}", *FAST]) == 0
    kept = _digest(run / "ckpt-00000001")

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(run / "ckpt-00000002.tmp"))

    monkeypatch.setattr(checkpoint, "save_model", full)
    args = ["train", "audio/waveflow-tiny", f"run_dir={run}", *FAST, "trainer.max_steps=2"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "No space left on device" in err
    assert _digest(run / "ckpt-00000001") == kept
    assert not (run / "ckpt-00000002.tmp").exists() and not (run / "ckpt-00000002").exists()
