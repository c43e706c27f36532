"""The benchmarks stay out of every other command, and leave the studio's home as they found it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from studio import loadtest
from studio.__main__ import build_parser
from studio.storage import temporary_home


def test_the_command_line_imports_no_benchmark_code() -> None:
    code = ("import sys, studio.__main__ as cli; cli.build_parser().parse_args(['bench', 'api', '--clients', '2']); "
            "print(sorted(m for m in sys.modules if m in ('studio.bench', 'studio.loadtest')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_benchmark_command_still_reaches_its_function() -> None:
    args = build_parser().parse_args(["bench", "forward", "--batches", "1,4", "--repeats", "2"])
    assert args.batches == [1, 4] and args.repeats == 2 and callable(args.func)
    with pytest.raises(SystemExit, match="^2$"):  # argparse's usage error, not a run
        build_parser().parse_args(["bench", "api", "--seconds", "nan"])  # checked before anything is imported


@pytest.mark.parametrize("before", [None, "/somewhere/else"])
def test_temporary_home_restores_the_variable_even_on_failure(before: str | None, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    if before is None:
        monkeypatch.delenv("STUDIO_HOME", raising=False)
    else:
        monkeypatch.setenv("STUDIO_HOME", before)
    with pytest.raises(RuntimeError, match="^inside$"), temporary_home(tmp_path) as home:
        assert home == tmp_path and os.environ["STUDIO_HOME"] == str(tmp_path)
        raise RuntimeError("inside")
    assert os.environ.get("STUDIO_HOME") == before


def test_bench_api_gives_the_studio_home_back(tiny_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = str(tmp_path / "the-users-home")
    monkeypatch.setenv("STUDIO_HOME", elsewhere)
    seen: list[str] = []

    @contextmanager
    def launched(home: Path, log: Path) -> Iterator[tuple[str, int]]:
        seen.append(os.environ["STUDIO_HOME"])  # what the launched studio and the CLI's images would use
        yield "http://127.0.0.1:9", os.getpid()

    monkeypatch.setattr(loadtest, "launched_studio", launched)
    monkeypatch.setattr(loadtest, "drive", lambda *args: ({}, loadtest.Tally()))
    result = loadtest.bench_api("tiny", [], 1.0, 1, tiny_home)
    assert result["runs"] == [] and seen == [str(tiny_home)]
    assert os.environ["STUDIO_HOME"] == elsewhere
