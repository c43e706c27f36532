"""Limits on what a visitor can make the studio hold: uploads, Gradio's cache, temporary files."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import httpx
import numpy as np
import pytest
from gradio_client import Client
from PIL import Image

from studio import limits
from studio.ui import launch
from studio.ui.files import AnimationFiles, ImageFiles
from studio.ui.scratch import scratch_root
from studio.loadtest import free_port
from tests.conftest import make_tiny_model

ROOT = Path(__file__).resolve().parents[1]


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


@pytest.fixture
def launched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, gr.Blocks, Path, Path]]:
    """The studio as ``launch`` serves it, with a 1 MB upload limit; its URL, Blocks, temp folder and Gradio cache.

    The system temp folder and Gradio's cache are this test's own, so whatever the studio leaves
    behind in them can be seen.
    """
    make_tiny_model(tmp_path / "home")
    temp, cache = tmp_path / "tmp", tmp_path / "gradio-cache"
    temp.mkdir()
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(limits.UPLOAD_ENV, "1")
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(cache))
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    port = free_port()
    demo = launch("127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/", demo, temp, cache
    demo.close()


def upload(url: str, size: int) -> httpx.Response:
    """Upload ``size`` bytes as one file the way the browser does."""
    return httpx.post(f"{url}gradio_api/upload", files={"files": ("artworks.zip", b"\0" * size)}, timeout=60)


@pytest.mark.slow
def test_an_upload_over_the_limit_is_refused_and_the_cache_is_emptied_at_shutdown(
        launched: tuple[str, gr.Blocks, Path, Path]) -> None:
    url, demo, _, cache = launched
    refused = upload(url, 2**20 + 1)
    assert refused.status_code == 413
    assert "maximum allowed size of 1048576 bytes" in refused.text
    assert files_under(cache) == []  # the part that streamed in before the refusal is gone too
    accepted = upload(url, 2**20)
    assert accepted.status_code == 200
    kept = Path(accepted.json()[0])
    assert kept.is_file() and kept.is_relative_to(cache)
    demo.close()  # what stopping the studio does
    assert not kept.exists()


@pytest.mark.slow
def test_a_dry_run_preview_leaves_no_copy_of_the_model_behind(launched: tuple[str, gr.Blocks, Path, Path]) -> None:
    url, _, temp, _ = launched
    weights = (Path(os.environ["STUDIO_HOME"]) / "models" / "tiny" / "model.safetensors").stat().st_size
    sample, preview = Client(url, verbose=False).predict("tiny", "alice/tiny-cats", api_name="/push_preview")
    assert f"| `model.safetensors` | {weights:,} bytes |" in preview
    assert Image.open(sample).size == (8 * 32 + 7 * 2, 3 * 32 + 2 * 2)
    left = files_under(temp)
    assert not [p for p in left if p.name in ("model.safetensors", "config.json", "README.md")], left


def test_the_upload_limit_is_200_mb_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(limits.UPLOAD_ENV, raising=False)
    assert limits.max_upload_bytes() == 200 * 2**20 == limits.MAX_UPLOAD_MB * 2**20
    monkeypatch.setenv(limits.UPLOAD_ENV, "0.5")
    assert limits.max_upload_bytes() == 2**19
    for bad in ("0", "-3", "lots", "nan", "inf"):
        monkeypatch.setenv(limits.UPLOAD_ENV, bad)
        with pytest.raises(ValueError, match=f"STUDIO_MAX_UPLOAD_MB must be a positive number of megabytes, "
                                             f"not '{bad}'"):
            limits.max_upload_bytes()


@pytest.fixture
def private_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A system temp folder of this test's own."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_image_folders_live_under_one_root_and_go_with_their_owner(private_temp: Path) -> None:
    files = ImageFiles()
    folder = files.folder
    assert folder.parent == scratch_root() and scratch_root().parent == private_temp
    assert folder.name.startswith(f"{os.getpid()}-images-")
    (folder / "a.png").write_bytes(b"png")
    del files
    gc.collect()
    assert not folder.exists()


def test_folders_of_a_studio_that_died_are_removed_by_the_next(private_temp: Path) -> None:
    root = scratch_root()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = root / f"{dead.stdout.strip()}-images-abc"  # that process has exited
    orphan.mkdir()
    (orphan / "a.png").write_bytes(b"png")
    alive = root / f"{os.getpid()}-images-def"  # this process's: kept
    alive.mkdir()
    files = AnimationFiles()
    assert not orphan.exists() and alive.is_dir() and files.folder.is_dir()


def test_scratch_folders_are_removed_when_the_studio_exits(private_temp: Path) -> None:
    code = "from studio.ui.files import ImageFiles; files = ImageFiles(); print(files.folder)"
    env = {**os.environ, "TMPDIR": str(private_temp)}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    folder = Path(result.stdout.strip())
    assert folder.is_relative_to(private_temp) and not folder.exists()


def test_only_the_newest_animations_are_kept(private_temp: Path) -> None:
    files = AnimationFiles(keep=2)
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    paths = [files.write(f"walk{i}.gif", iter(frames), 12, 8) for i in range(3)]
    assert sorted(p.name for p in files.folder.iterdir()) == ["walk1.gif", "walk2.gif"]
    assert files.write("walk2.gif", iter([]), 12, 8) == paths[2]  # an existing animation is not drawn again
