"""The named models: built-in pretrained ones, converted on first use, and every local model folder.

A built-in model's weights come from a pip package on disk (never from the network at run time).
They are converted once into a model folder under ``STUDIO_HOME/models/<name>``; from then on every
model, built-in or fine-tuned, is just a folder there.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from torch import nn

from studio.checkpoint import (
    WEIGHTS_FILE,
    ModelConfig,
    ModelFolderError,
    build_generator,
    check_state_dict,
    load_config,
    load_model,
    save_model,
)
from studio.storage import atomic_dir, models_dir

DEFAULT_MODEL = "omniart-eyes"


class ModelUnavailable(RuntimeError):
    """A model is unknown, or its weights cannot be found or read; the message says what to do."""


@dataclass(frozen=True)
class BuiltinModel:
    """A pretrained model the studio knows how to obtain.

    Attributes:
        config: The model's config, known without reading its weights.
        load_state: Returns the generator's state dict in studio layout; raises ModelUnavailable.
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

    @cached_property
    def weights_sha256(self) -> str:
        """SHA-256 of the weights file: names these exact weights in recipes and caches."""
        with open(self.folder / WEIGHTS_FILE, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()


def sequential_dcgan_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a DCGAN generator saved as one ``nn.Sequential`` (``main.N.*``) onto the studio's layout.

    This is the layout of the PyTorch DCGAN tutorial and of the packages derived from it: each 4-D
    weight starts a transposed convolution, the 1-D tensors after it belong to its batch norm, and
    the last convolution makes the image.
    """
    groups: list[list[tuple[str, torch.Tensor]]] = []
    pattern = re.compile(r"^(?:module\.)?main\.(\d+)\.(\w+)$")
    keyed = []
    for key, tensor in state.items():
        m = pattern.match(key)
        if not m:
            raise ModelUnavailable(f"unexpected tensor {key!r}: not a sequential DCGAN generator (main.N.*)")
        keyed.append((int(m.group(1)), m.group(2), tensor))
    keyed.sort(key=lambda t: t[0])
    for _, param, tensor in keyed:
        if tensor.dim() == 4:
            groups.append([("conv", tensor)])
        elif groups:
            groups[-1].append((param, tensor))
        else:
            raise ModelUnavailable("a sequential DCGAN generator must start with a convolution weight")
    out: dict[str, torch.Tensor] = {}
    for i, group in enumerate(groups):
        last = i == len(groups) - 1
        prefix = "to_rgb.0" if last else f"blocks.{i}.0"
        out[f"{prefix}.weight"] = group[0][1]
        for param, tensor in group[1:]:
            if last:
                raise ModelUnavailable("the last convolution of a DCGAN generator has no batch norm")
            out[f"blocks.{i}.1.{param}"] = tensor
    return out


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
}


def _local_names() -> list[str]:
    root = models_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".") and (p / "config.json").is_file())


def model_names() -> list[str]:
    """Every model's name: the built-in ones first (the default leading), then local folders."""
    names = list(BUILTIN)
    return names + [n for n in _local_names() if n not in BUILTIN]


def model_config(name: str) -> ModelConfig:
    """A model's config, read without loading (or converting) its weights."""
    folder = models_dir() / name
    if (folder / "config.json").is_file():
        return load_config(folder)
    if name in BUILTIN:
        return BUILTIN[name].config
    raise _unknown(name)


def _unknown(name: str) -> ModelUnavailable:
    return ModelUnavailable(f"unknown model {name!r}; available: {', '.join(model_names())}")


def model_folder(name: str) -> Path:
    """The folder of model ``name``, converting a built-in model's weights on first use."""
    if not name or "/" in name or name.startswith("."):
        raise _unknown(name)
    folder = models_dir() / name
    if (folder / WEIGHTS_FILE).is_file():
        return folder
    if name not in BUILTIN:
        raise _unknown(name)
    entry = BUILTIN[name]
    generator = build_generator(entry.config)
    state = entry.load_state()
    try:
        check_state_dict(generator, state, where=f"the {name} weights")
    except ModelFolderError as e:
        raise ModelUnavailable(str(e)) from None
    generator.load_state_dict(state)
    with atomic_dir(folder) as tmp:
        save_model(tmp, entry.config, generator)
    return folder


def load(name: str, device: str | torch.device = "cpu") -> LoadedModel:
    """Load model ``name`` onto ``device`` (converting a built-in one on first use).

    Raises:
        ModelUnavailable: Unknown name, or weights that cannot be found or read.
    """
    folder = model_folder(name)
    try:
        config, generator = load_model(folder, device)
    except ModelFolderError as e:
        raise ModelUnavailable(str(e)) from None
    return LoadedModel(name, config, generator, folder)
