"""The studio as a Space: the Dockerfile's facts, the image's contents, CUDA without a setting, ZeroGPU."""

from __future__ import annotations

import fnmatch
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from studio import engine
from studio.spaces_gpu import gpu

ROOT = Path(__file__).resolve().parents[1]


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            rows.append((word.upper(), rest.strip()))
    return rows


def env_of(rows: list[tuple[str, str]]) -> dict[str, str]:
    env = {}
    for word, rest in rows:
        if word == "ENV":
            env.update(part.split("=", 1) for part in shlex.split(rest))
    return env


def test_dockerfile_serves_on_7860_as_uid_1000_with_a_writable_home() -> None:
    rows = instructions()
    words = [w for w, _ in rows]
    assert rows[0] == ("FROM", "python:3.11-slim")

    useradd = next(rest for w, rest in rows if w == "RUN" and "useradd" in rest)
    user = useradd.split()[-1]
    assert "--uid 1000" in useradd and "--create-home" in useradd
    user_at = words.index("USER")
    assert rows[user_at][1] == user and words.count("USER") == 1
    assert words.index("CMD") > user_at  # the studio runs as that user, never as root

    env = env_of(rows)
    assert env["GRADIO_SERVER_NAME"] == "0.0.0.0" and env["GRADIO_SERVER_PORT"] == "7860"
    assert ("EXPOSE", "7860") in rows
    home = env["HOME"]
    assert env["STUDIO_HOME"].startswith(home + "/")
    # Folders the studio writes to are made by the user (after USER), so uid 1000 owns them.
    made = [rest for w, rest in rows[user_at:] if w == "RUN" and rest.startswith("mkdir -p")]
    assert any('"$STUDIO_HOME"' in m for m in made)
    workdir = next(rest for w, rest in rows if w == "WORKDIR")
    assert any(f'"$HOME/{Path(workdir).name}"' in m for m in made) and workdir == f"{home}/{Path(workdir).name}"
    assert words.index("WORKDIR") > rows.index(next(r for r in rows[user_at:] if r[1].startswith("mkdir -p")))

    assert ("RUN", "pip install --no-cache-dir --user -r requirements.txt") in rows
    assert rows[-1] == ("CMD", '["python", "app.py"]')


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker's .dockerignore ``patterns`` leave ``path`` out of the build context."""
    parts = path.split("/")
    for pattern in patterns:
        pattern = pattern.removeprefix("**/")
        if any(fnmatch.fnmatch("/".join(parts[i:j]), pattern)
               for i in range(len(parts)) for j in range(i + 1, len(parts) + 1)):
            return True
    return False


def test_dockerignore_keeps_what_the_studio_runs_on() -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    needed = ["app.py", "requirements.txt", "assets/studio.css",
              *(p.relative_to(ROOT).as_posix() for p in (ROOT / "studio").rglob("*.py"))]
    for path in needed:
        assert not ignored(path, patterns), path
    for path in (".git/config", "tests/test_space.py", "studio/__pycache__/zoo.cpython-311.pyc", ".venv/bin/python"):
        assert ignored(path, patterns), path


def test_the_engine_takes_cuda_without_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STUDIO_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert engine.default_device() == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert engine.default_device() == torch.device("cpu")


def test_without_spaces_gpu_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "spaces", None)  # importing it now fails, as where it is not installed

    def draw() -> int:
        return 7

    assert gpu()(draw) is draw and gpu(duration=120)(draw) is draw


def test_where_spaces_is_importable_the_forward_pass_carries_its_decorator(tmp_path: Path) -> None:
    fake = tmp_path / "spaces"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "def GPU(task=None, *, duration=None, size=None):\n"
        "    def mark(fn):\n"
        "        fn.zerogpu_duration = duration\n"
        "        return fn\n"
        "    return mark\n")
    probe = "from studio import engine; print(getattr(engine.run_generator, 'zerogpu_duration', 'bare'))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    marked = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert marked.returncode == 0, marked.stderr
    assert marked.stdout.strip() == "None"  # decorated, with ZeroGPU's default duration
    bare = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bare.stdout.strip() == "bare"
