"""The command line: help lists the commands, the demo runs, bad input is one line, not a trace."""

from __future__ import annotations

import pytest

from sharedflow.cli import main


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
