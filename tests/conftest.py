"""Shared fixtures and helpers: a private studio home per test, a tiny model, the real default model, the command
line, and the browser steps and checks that several test modules take."""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import shutil
import signal
import subprocess
import sys
import types
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from studio import zoo
from studio.bench import CHROMIUM_FLAGS
from studio.loadtest import launched_studio
from studio.engine import Engine, Request
from studio.models.folder import ModelConfig, build_generator, save_pretrained

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Playwright

ROOT = Path(__file__).resolve().parents[1]
TINY_CLASSES = ("cat", "dog", "fox")
CHROMIUM = "/usr/bin/chromium"  # Debian's package: `playwright install` cannot download browsers here
MAIN_IMG = "#main-image img"
# Tests compare pixels across paths (views, replays, the command line) bit for bit, on CPUs with and
# without native bf16: every path draws in exact fp32 unless a test asks for a precision itself
# (tests/test_precision.py exercises the policy's every branch). Subprocesses inherit it.
os.environ.setdefault("STUDIO_PRECISION", "exact")


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
    save_pretrained(folder, config, generator)
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


@contextlib.contextmanager
def job_workers_stopped(home: Path) -> Iterator[None]:
    """On the way out, kill fine-tune workers still running from ``home``: they outlive the server by design
    (a restarted studio resumes them), so a test that fails before cancelling would leave its job training,
    slowing every later test and benchmark."""
    try:
        yield
    finally:
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            with contextlib.suppress(OSError):
                args = cmdline.read_bytes().split(b"\0")
                if b"studio.jobs" in args and any(str(home).encode() in arg for arg in args):
                    os.kill(int(cmdline.parent.name), signal.SIGKILL)


@pytest.fixture(scope="session")
def studio_url(converted_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real studio, started as a user starts it (``python app.py``), on a free loopback port."""
    log = tmp_path_factory.mktemp("app") / "app.log"
    with job_workers_stopped(converted_home), launched_studio(converted_home, log) as (url, _):
        yield url


def noise_artworks(folder: Path, n: int = 6) -> list[str]:
    """``n`` small random-noise PNGs in ``folder`` (distinct, so none is a near duplicate of another)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        path = folder / f"art{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(path)
        files.append(str(path))
    return files


def run_cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    """``python -m studio ARGS...`` in a child process with ``home`` as its studio home."""
    env = {**os.environ, "STUDIO_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "studio", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


class RecordingEngine(Engine):
    """A real engine that records the size of every animation request, and how many frames it has served.

    With ``slip_in`` set, the first animation request is followed at once by that interactive request,
    and ``frames_before_slip_in`` tells how many animation frames were served before it.
    """

    def __init__(self, slip_in: Request | None = None) -> None:
        super().__init__("cpu")
        self.sizes: list[int] = []
        self.frames_served = 0
        self.slip_in = slip_in
        self.frames_before_slip_in: int | None = None

    def submit(self, request: Request) -> Future:
        future = super().submit(request)
        if request.z is None:
            return future
        self.sizes.append(request.count)
        future.add_done_callback(lambda _: self._served(request.count))
        if self.slip_in is not None:
            interactive, self.slip_in = super().submit(self.slip_in), None
            interactive.add_done_callback(lambda _: setattr(self, "frames_before_slip_in", self.frames_served))
        return future

    def _served(self, count: int) -> None:
        self.frames_served += count


# -- browser ------------------------------------------------------------------------------------------


def launch_chromium(playwright: Playwright) -> Browser:
    """The system's Chromium, driven by Playwright with the flags a container without a GPU needs."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)


def shown_bytes(page: Page) -> bytes:
    """The PNG the page shows now, fetched from its own src."""
    src = page.eval_on_selector(MAIN_IMG, "img => new URL(img.getAttribute('src'), location.href).href")
    return page.request.get(src).body()


def shown_pixels(page: Page) -> np.ndarray:
    """The pixels of the image the page shows now, fetched from its own src."""
    return np.asarray(Image.open(io.BytesIO(shown_bytes(page))).convert("RGB"))


def current_src(page: Page) -> str:
    """The src of the image the page shows now."""
    return page.get_attribute(MAIN_IMG, "src")


def wait_for_new_image(page: Page, old_src: str) -> None:
    """Wait until the page shows an image other than the one at ``old_src``."""
    page.wait_for_function(f"old => document.querySelector('{MAIN_IMG}')?.getAttribute('src') !== old",
                           arg=old_src, timeout=60_000)


def set_seed(page: Page, value: int) -> None:
    """Type ``value`` into Explore's seed box and wait until the main image is redrawn."""
    old = current_src(page)
    page.fill("#seed input", str(value))
    page.press("#seed input", "Enter")
    wait_for_new_image(page, old)


def start_long_fine_tune(page: Page, files: list[str], data_name: str, out_name: str, base: str = "tiny") -> None:
    """In a Playwright page on the Fine-tune tab: prepare ``files`` as a data set for model ``base`` and
    start a long Custom run (batch 4) making ``out_name``; returns once the job runs."""
    page.set_input_files("#ft-upload input[type=file]", files)
    page.locator("#ft-data-name textarea, #ft-data-name input").first.fill(data_name)
    page.locator("#ft-base input").fill(base)
    page.locator("#ft-base input").press("Enter")
    page.click("#ft-ingest")
    page.wait_for_function(f"() => document.querySelector('#ft-report').innerText.includes('{len(files)} kept')",
                           timeout=60_000)
    page.locator("#ft-out textarea, #ft-out input").first.fill(out_name)
    page.get_by_label("Custom").check()
    page.fill("#ft-steps input", "20000")
    page.press("#ft-steps input", "Enter")
    page.fill("#ft-batch input", "4")
    page.press("#ft-batch input", "Enter")
    page.click("#ft-start")
    page.wait_for_function("() => document.querySelector('#ft-progress').innerText.includes('running')",
                           timeout=60_000)


# -- NVIDIA-style pickles, written the way torch_utils.persistence writes them -----------------------


@contextlib.contextmanager
def fake_modules(**modules: dict[str, object]) -> Iterator[None]:
    """Install modules named like NVIDIA's (``torch_utils.persistence``) holding ``attrs``, then remove them."""
    added = []
    for dotted, attrs in modules.items():
        parts = dotted.split(".")
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            if name not in sys.modules:
                sys.modules[name] = types.ModuleType(name)
                added.append(name)
        for attr, value in attrs.items():
            value.__module__, value.__qualname__ = dotted, attr  # pickle finds a global by these
            setattr(sys.modules[dotted], attr, value)
    try:
        yield
    finally:
        for name in added:
            del sys.modules[name]


def reconstruct_by_running_source(meta: dict) -> object:
    """What NVIDIA's reconstruction does first: run the carried source (the reader must never get here)."""
    exec(meta["module_src"], {})  # noqa: S102 - the point: this must stay unreached
    raise AssertionError("the reader called the file's reconstruction function")


class EasyDict(dict):
    """Stands in for ``dnnlib.util.EasyDict`` while pickling."""


class Net(torch.nn.Module):
    """A module that pickles like an NVIDIA persistent network of class ``class_name``."""

    def __init__(self, class_name: str, kwargs: dict | None = None, source: str = "", **tensors: torch.Tensor):
        super().__init__()
        self._init_args, self._init_kwargs = (), kwargs or {}
        for name, tensor in tensors.items():
            if isinstance(tensor, torch.nn.Parameter):
                self.register_parameter(name, tensor)
            else:
                self.register_buffer(name, tensor)
        self.meta = {"type": "class", "version": 6, "module_src": source, "class_name": class_name}

    def __reduce__(self) -> tuple:
        state = {k: v for k, v in self.__dict__.items() if k != "meta"}
        persistence = sys.modules["torch_utils.persistence"]
        return persistence._reconstruct_persistent_obj, ({**self.meta, "state": state},)


def nest(parent: Net, **children: Net) -> Net:
    """``parent`` with ``children`` as its child modules."""
    for name, child in children.items():
        parent.add_module(name, child)
    return parent


def snapshot_bytes(networks: dict, protocol: int = 4) -> bytes:
    """Pickle ``networks`` as NVIDIA's training loop does; the fake modules go away after."""
    modules = {"torch_utils.persistence": {"_reconstruct_persistent_obj": reconstruct_by_running_source},
               "dnnlib.util": {"EasyDict": EasyDict}}
    with fake_modules(**modules):
        return pickle.dumps(networks, protocol=protocol)


# -- StyleGAN2 files of other layouts, imported -------------------------------------------------------------


def kept_discriminator_logits(folder: Path, images: torch.Tensor) -> torch.Tensor:
    """The logits that the discriminator an import kept beside model ``folder`` gives ``images``."""
    from safetensors.torch import load_file

    from studio.models.folder import DISCRIMINATOR_FILE, build_discriminator, load_config

    discriminator = build_discriminator(load_config(folder)).eval()
    discriminator.load_state_dict(load_file(str(folder / DISCRIMINATOR_FILE)))
    with torch.no_grad():
        return discriminator(images)


def assert_import_refused(path: Path, said: str, home: Path) -> None:
    """``python -m studio import PATH`` exits 2 with one line on stderr that contains ``said``."""
    refused = run_cli("import", str(path), "--name", "refused", home=home)
    assert refused.returncode == 2 and said in refused.stderr, refused.stderr
    assert refused.stderr.count("\n") == 1, refused.stderr
