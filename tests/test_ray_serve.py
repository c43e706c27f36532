"""The studio on Ray Serve (``python -m studio serve --ray``), driven through its API with the real gradio_client."""

from __future__ import annotations

import ast
import inspect
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client
from PIL import Image

from studio.engine import BUSY_MESSAGE, Engine, Request
from studio.loadtest import launched_studio
from studio.recipe import Recipe

ROOT = Path(__file__).resolve().parents[1]
CALL_TIMEOUT_S = 60.0  # no call may hang: each one is answered or refused well within this
CLIENTS = 8


def test_only_the_ray_backend_imports_ray() -> None:
    importers = []
    for path in (ROOT / "studio").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(name == "ray" or name.startswith("ray.") for name in names):
                importers.append(path.relative_to(ROOT).as_posix())
    assert sorted(set(importers)) == ["studio/ray_backend.py"]
    # The command line (every command's parser) and the studio's UI load without Ray.
    code = "import sys, studio.__main__, studio.ui; sys.exit('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_the_ray_engine_has_the_engines_interface() -> None:
    from studio.ray_backend import RayEngine

    def public(cls: type) -> set[str]:
        return {name for name, value in vars(cls).items() if callable(value) and not name.startswith("_")}

    def signature(cls: type, name: str) -> inspect.Signature:
        return inspect.signature(getattr(cls, name), eval_str=True)

    assert public(Engine) <= public(RayEngine)
    for name in public(Engine) - {"stats"}:  # stats adds the replicas' share to the same keys
        assert signature(RayEngine, name) == signature(Engine, name), name


def recipe_json(seed: int) -> str:
    return Recipe("tiny", "", seed, {"cat": 1.0}).to_json()


def draw(client: Client, seed: int) -> np.ndarray | str:
    """The pixels the studio's ``/draw`` returns for ``seed``, or the message it was refused with."""
    job = client.submit(recipe_json(seed), api_name="/draw")
    try:
        path, _ = job.result(timeout=CALL_TIMEOUT_S)  # a TimeoutError here is a hung request: the test fails
    except TimeoutError:
        raise
    except Exception as e:  # gradio_client's error for a refused call carries the studio's message
        return str(e)
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def replica_pids(client: Client) -> set[int]:
    """The process ids of the replicas that have drawn images, from the engine panel's API."""
    stats = client.predict(api_name="/engine_stats")[1]
    return {int(name.rsplit(":", 1)[1]) for name in stats["replicas"]}


@pytest.mark.slow
def test_two_replicas_draw_the_local_pixels_and_a_dead_one_loses_no_request(
        tiny_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Exact fp32 in the replicas and here alike: the same pixels whatever precision each would calibrate to.
    monkeypatch.setenv("STUDIO_PRECISION", "exact")
    args = ("-m", "studio", "serve", "--ray", "--replicas", "2")
    with launched_studio(tiny_home, tmp_path / "studio.log", args=args) as (url, _), \
            Engine() as local, ThreadPoolExecutor(CLIENTS) as pool:
        clients = [Client(url, verbose=False, download_files=str(tmp_path)) for _ in range(CLIENTS)]

        def expected(seed: int) -> np.ndarray:
            return local.generate(Request("tiny", (seed,), {"cat": 1.0}, precision="fast"))[0]  # as /draw asks

        # Concurrent calls spread over both replicas; each image is the local engine's, to the bit.
        pids: set[int] = set()
        for round_ in range(5):
            seeds = range(100 * round_, 100 * round_ + 4 * CLIENTS)
            for seed, got in zip(seeds, pool.map(lambda s: draw(clients[s % CLIENTS], s), seeds)):
                assert isinstance(got, np.ndarray), got
                assert np.array_equal(got, expected(seed)), seed
            pids = replica_pids(clients[0])
            if len(pids) == 2:
                break
        assert len(pids) == 2, "one replica drew every image"

        # Clients keep calling while one replica is killed: each call is answered (the right pixels) or
        # refused with the busy message; none hangs, none fails otherwise.
        stop = threading.Event()

        def keep_drawing(index: int) -> list[tuple[int, np.ndarray | str]]:
            outcomes, seed = [], 10_000 + index
            while not stop.is_set():
                outcomes.append((seed, draw(clients[index], seed)))
                seed += CLIENTS
            return outcomes

        running = [pool.submit(keep_drawing, i) for i in range(CLIENTS)]
        time.sleep(1.5)
        os.kill(min(pids), signal.SIGKILL)
        time.sleep(3.0)
        stop.set()
        outcomes = [o for r in running for o in r.result(timeout=2 * CALL_TIMEOUT_S)]
        refused = [got for _, got in outcomes if isinstance(got, str)]
        assert all(BUSY_MESSAGE in message for message in refused), refused
        answered = [(seed, got) for seed, got in outcomes if isinstance(got, np.ndarray)]
        assert answered, "no call was answered while one replica lived"
        assert all(np.array_equal(got, expected(seed)) for seed, got in answered)
        # The studio still draws afterwards (the surviving replica, or the one Serve started instead).
        assert isinstance(draw(clients[0], 7), np.ndarray)
