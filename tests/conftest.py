"""Shared fixtures: a private studio home per test, a tiny model, and the real default model."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from studio import zoo
from studio.engine import Engine, Request
from studio.checkpoint import ModelConfig, build_generator, save_model

TINY_CLASSES = ("cat", "dog", "fox")


def tiny_config(num_classes: int = 3, resolution: int = 32) -> ModelConfig:
    """A small DCGAN config that runs in milliseconds on the CPU."""
    names = TINY_CLASSES[:num_classes]
    return ModelConfig(
        architecture="dcgan",
        arch={"resolution": resolution, "z_dim": 16, "base_width": 8, "num_classes": num_classes},
        class_names=names,
        title="Tiny test model",
        license="mit",
    )


def make_tiny_model(home: Path, name: str = "tiny", seed: int = 0, **kwargs) -> Path:
    """Save a randomly initialised (seeded) tiny model folder under ``home/models/name``."""
    torch.manual_seed(seed)
    config = tiny_config(**kwargs)
    generator = build_generator(config)
    for module in generator.modules():  # non-trivial batch-norm statistics, so eval mode matters
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    folder = home / "models" / name
    save_model(folder, config, generator)
    return folder


def package_reference_generator() -> nn.Sequential:
    """The package's generator, rebuilt here as a plain nn.Sequential from its published layer list."""
    layers: list[nn.Module] = [nn.ConvTranspose2d(108, 1024, 4, 1, 0, bias=False), nn.BatchNorm2d(1024), nn.ReLU(),
                               nn.Dropout(0.2)]
    for cin, cout in [(1024, 512), (512, 256), (256, 128), (128, 64)]:
        layers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
    layers += [nn.ConvTranspose2d(64, 3, 4, 2, 1, bias=False), nn.Tanh()]
    main = nn.Sequential(*layers)
    path = zoo._package_file("omniart_eye_generator", "generator_model_state.pth")
    state = torch.load(path, map_location="cpu", weights_only=True)
    main.load_state_dict({k.removeprefix("main."): v for k, v in state.items()})
    return main.eval()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty studio home for this test."""
    path = tmp_path / "studio-home"
    monkeypatch.setenv("STUDIO_HOME", str(path))
    return path


@pytest.fixture
def tiny(home: Path) -> str:
    """The name of a tiny conditional model in this test's studio home."""
    make_tiny_model(home)
    return "tiny"


@pytest.fixture
def tiny_home(home: Path) -> Path:
    """A studio home holding the tiny model, for commands run in a subprocess."""
    make_tiny_model(home)
    return home


@pytest.fixture(scope="session")
def converted_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A studio home holding the converted default model (converted once per session) and the tiny model."""
    path = tmp_path_factory.mktemp("converted-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STUDIO_HOME", str(path))
        zoo.model_folder(zoo.DEFAULT_MODEL)
    make_tiny_model(path)  # for the studio's fine-tune tests, which need a model that trains in seconds
    return path


@pytest.fixture
def eyes_home(converted_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's own studio home, already holding the converted default model."""
    path = tmp_path / "studio-home"
    shutil.copytree(converted_home, path)
    monkeypatch.setenv("STUDIO_HOME", str(path))
    return path


@pytest.fixture(scope="session")
def eyes(converted_home: Path) -> zoo.LoadedModel:
    """The default model, loaded once per session (default layout, outside any engine)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STUDIO_HOME", str(converted_home))
        return zoo.load(zoo.DEFAULT_MODEL)


@pytest.fixture(scope="session")
def eyes_engine(converted_home: Path) -> Iterator[Engine]:
    """An engine with the default model already loaded: the path every studio image takes."""
    with pytest.MonkeyPatch.context() as mp, Engine() as eng:
        mp.setenv("STUDIO_HOME", str(converted_home))
        eng.generate(Request(zoo.DEFAULT_MODEL, (0,), zoo.OMNIART_CLASSES[0]))  # loads it while the env is set
        mp.undo()
        yield eng


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def studio_url(converted_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real studio, started as a user starts it (``python app.py``), on a free loopback port."""
    port = free_port()
    env = {**os.environ, "STUDIO_HOME": str(converted_home), "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_SERVER_PORT": str(port)}
    log = tmp_path_factory.mktemp("app") / "app.log"
    root = Path(__file__).resolve().parents[1]
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"the studio did not start:\n{log.read_text()}")
            time.sleep(0.25)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
