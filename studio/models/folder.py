"""The model folder: ``config.json`` + ``model.safetensors``, the one way a model is saved and opened.

``save_pretrained`` writes one and ``from_pretrained`` opens one, wherever it came from (a built-in
model's conversion, the Hub, a fine-tune). Only safetensors is ever written or read here, so opening a
model folder never runs pickled code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from studio.models import architecture
from studio.models.face import ArchConfig
from studio.storage import atomic_write, atomic_write_bytes

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
DISCRIMINATOR_FILE = "discriminator.safetensors"


class ModelFolderError(ValueError):
    """A model folder is missing, unreadable or does not match its config."""


class ArchitectureError(ValueError):
    """A config names an unknown architecture, or arguments its architecture refuses."""


@dataclass(frozen=True)
class ModelConfig:
    """Everything ``config.json`` records about a model.

    Attributes:
        architecture: Key into ``studio.models.ARCHITECTURES``.
        arch: The architecture's own frozen config (e.g. ``DCGANConfig``); given as a dict of its
            keyword arguments (as JSON holds it), it is built from them.
        class_names: One name per class of a conditional model, in class-vector order.
        title: Human-readable name.
        description: What the model draws and what it was trained on.
        license: SPDX-style licence id of the weights.
        author: Who trained the weights.
        source: Where the weights came from.
        lineage: How a fine-tuned model was made: base model, dataset, steps, losses, SWD.

    Raises:
        ArchitectureError: Unknown architecture, or ``arch`` arguments it refuses.
        ModelFolderError: The class names do not match the number of classes.
    """

    architecture: str
    arch: ArchConfig
    class_names: tuple[str, ...] = ()
    title: str = ""
    description: str = ""
    license: str = ""
    author: str = ""
    source: str = ""
    lineage: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            kind = architecture(self.architecture)
            arch = kind.config(**self.arch) if isinstance(self.arch, Mapping) else self.arch
        except (ValueError, TypeError) as e:
            raise ArchitectureError(str(e)) from None
        if not isinstance(arch, kind.config):
            raise ArchitectureError(f"the config of a {self.architecture} model is a {kind.config.__name__} or a "
                                    f"dict of its fields, not {type(arch).__name__}")
        object.__setattr__(self, "arch", arch)
        object.__setattr__(self, "class_names", tuple(self.class_names))
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ModelFolderError(f"config lists {len(self.class_names)} class names for {self.num_classes} classes")

    @property
    def resolution(self) -> int:
        """Output side in pixels."""
        return int(self.arch.resolution)

    @property
    def z_dim(self) -> int:
        """Latent size."""
        return int(self.arch.z_dim)

    @property
    def num_classes(self) -> int:
        """Number of classes; 0 for an unconditional model."""
        return int(self.arch.num_classes)

    @property
    def num_style_layers(self) -> int:
        """Per-layer style inputs (StyleGAN's ws); 0 for a family whose latent enters once."""
        return int(self.arch.num_ws)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document; ``resolution`` and ``z_dim`` are repeated at the top for other readers."""
        d = asdict(self)  # the architecture's config becomes the dict of its fields
        d["class_names"] = list(self.class_names)
        return {"resolution": self.resolution, "z_dim": self.z_dim, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Rebuild from ``to_dict`` output, ignoring the derived top-level keys."""
        d = {k: v for k, v in d.items() if k not in ("resolution", "z_dim")}
        return cls(**d)


def build_generator(config: ModelConfig) -> nn.Module:
    """An untrained generator for ``config`` (offers ``face.GeneratorFace``)."""
    return architecture(config.architecture).generator(config.arch)


def build_discriminator(config: ModelConfig) -> nn.Module:
    """An untrained discriminator for ``config`` (offers ``face.DiscriminatorFace``)."""
    return architecture(config.architecture).discriminator(config.arch)


def save_pretrained(folder: Path, config: ModelConfig, generator: nn.Module,
                    discriminator_state: dict[str, torch.Tensor] | None = None) -> None:
    """Write ``config.json`` and ``model.safetensors`` into ``folder``, each atomically.

    ``discriminator_state``: the discriminator's tensors, kept as ``DISCRIMINATOR_FILE`` for later fine-tunes.
    """
    folder = Path(folder)
    state = {k: v.detach().to("cpu").contiguous() for k, v in generator.state_dict().items()}
    atomic_write(folder / WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    if discriminator_state is not None:
        d_state = {k: v.detach().to("cpu").contiguous() for k, v in discriminator_state.items()}
        atomic_write(folder / DISCRIMINATOR_FILE, lambda tmp: save_file(d_state, str(tmp)))
    text = json.dumps(config.to_dict(), indent=2, ensure_ascii=False) + "\n"
    atomic_write_bytes(folder / CONFIG_FILE, text.encode())


def load_config(folder: Path) -> ModelConfig:
    """Read a model folder's ``config.json``.

    Raises:
        ModelFolderError: No config, one that is no valid JSON config, or one that describes no buildable model.
    """
    path = Path(folder) / CONFIG_FILE
    try:
        return ModelConfig.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise ModelFolderError(f"{folder} is not a model folder: it has no {CONFIG_FILE}") from None
    except ArchitectureError as e:
        raise ModelFolderError(f"{path} describes no buildable model: {e}") from None
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as e:
        raise ModelFolderError(f"{path} is not a valid model config: {e}") from None


def from_pretrained(folder: Path, device: str | torch.device = "cpu") -> tuple[ModelConfig, nn.Module]:
    """Open a model folder: its config and generator (in eval mode) on ``device``.

    Raises:
        ModelFolderError: The folder lacks a file, its config describes no buildable model, or a tensor
            is missing, unexpected or mis-shaped; the message names the tensor.
    """
    # Resolved once: a folder swapped meanwhile (storage.swap_dir) still gives config and weights of one version.
    folder = Path(folder).resolve()
    config = load_config(folder)
    weights = folder / WEIGHTS_FILE
    # Built on the meta device first, the network takes no memory: a config that asks for a huge
    # network, or weights that do not fit it, are refused from the file's header alone.
    with torch.device("meta"):
        skeleton = build_generator(config)
    if not weights.is_file():
        raise ModelFolderError(f"{folder} has no {WEIGHTS_FILE}")
    try:
        with safe_open(str(weights), framework="pt") as f:
            shapes = {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in f.keys()}
        check_state_dict(skeleton, shapes, where=str(weights))
        state = load_file(str(weights))
    except ModelFolderError:
        raise
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise ModelFolderError(f"{weights} is not a readable safetensors file: {e}") from None
    generator = build_generator(config)
    generator.load_state_dict(state)
    return config, generator.to(device).eval()


def check_state_dict(module: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Raise ModelFolderError naming the first tensor of ``state`` that does not fit ``module``."""
    expected = module.state_dict()
    for name, tensor in expected.items():
        if name not in state:
            raise ModelFolderError(f"{where} is missing tensor {name!r} (shape {tuple(tensor.shape)})")
        if state[name].shape != tensor.shape:
            raise ModelFolderError(
                f"{where}: tensor {name!r} has shape {tuple(state[name].shape)}, expected {tuple(tensor.shape)}"
            )
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise ModelFolderError(f"{where} has unexpected tensor {unexpected[0]!r}")
