"""The command line: help lists the commands, the demo runs, bad input is one line, not a trace."""

from __future__ import annotations

import pytest

from sharedflow.cli import _parse, main


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "demo" in capsys.readouterr().out


def test_demo_trains_every_sharing_mode(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--iters", "30"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "sharing" not in line]
    assert [row.split("|")[1].strip() for row in rows] == [
        "independent",
        "shared",
        "decomposed",
        "nanoflow",
    ]
    for row in rows:
        before, after = (float(cell) for cell in row.split("|")[6:8])
        assert after < before, row


def test_unknown_command_exits_non_zero(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["nonsense"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_overrides_after_the_options_join_the_overrides() -> None:
    args = _parse(["compare", "audio-tiny", "--out", "o", "--steps", "5", "optim.lr=1e-3", "x=1"])
    assert args.entries == ["audio-tiny", "optim.lr=1e-3", "x=1"]
    assert (args.out, args.steps) == ("o", 5)
    args = _parse(["train", "audio/waveflow-tiny", "-m", "model.channels=16,32"])
    assert args.overrides == ["model.channels=16,32"] and args.multirun


@pytest.mark.parametrize(
    "argv",
    [["compare", "audio-tiny", "--out", "o", "--nonsense"], ["recipes", "stray"]],
)
def test_stray_words_and_unknown_options_are_errors(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _parse(argv)
    assert exit_info.value.code == 2
    assert f"unrecognized arguments: {argv[-1]}" in capsys.readouterr().err
