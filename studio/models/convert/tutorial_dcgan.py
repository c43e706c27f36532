"""The PyTorch DCGAN tutorial's layout: a generator saved as one ``nn.Sequential`` (``main.N.*``).

The layout of the tutorial and of the packages derived from it (both built-in models come from
such packages): each 4-D weight starts a transposed convolution, the 1-D tensors after it belong
to its batch norm, and the last convolution makes the image.
"""

from __future__ import annotations

import re

import torch

from studio.models.convert import ConversionError
from studio.models.folder import ModelConfig


def sequential_dcgan_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a DCGAN generator saved as one ``nn.Sequential`` (``main.N.*``) onto the studio's layout.

    Raises:
        ConversionError: A tensor outside the layout, or convolutions with biases the studio's DCGAN lacks.
    """
    groups: list[list[tuple[str, torch.Tensor]]] = []
    pattern = re.compile(r"^(?:module\.)?main\.(\d+)\.(\w+)$")
    keyed = []
    for key, tensor in state.items():
        m = pattern.match(key)
        if not m:
            raise ConversionError(f"unexpected tensor {key!r}: not a sequential DCGAN generator (main.N.*)")
        keyed.append((int(m.group(1)), m.group(2), tensor))
    keyed.sort(key=lambda t: t[0])
    conv_index = -1
    for index, param, tensor in keyed:
        if tensor.dim() == 4:
            groups.append([("conv", tensor)])
            conv_index = index
        elif index == conv_index:
            # Without this check a convolution's bias would be taken for its batch norm's.
            raise ConversionError(f"convolution main.{index} has a {param}; the studio's DCGAN has none")
        elif groups:
            groups[-1].append((param, tensor))
        else:
            raise ConversionError("a sequential DCGAN generator must start with a convolution weight")
    out: dict[str, torch.Tensor] = {}
    for i, group in enumerate(groups):
        last = i == len(groups) - 1
        prefix = "to_rgb.0" if last else f"blocks.{i}.0"
        out[f"{prefix}.weight"] = group[0][1]
        for param, tensor in group[1:]:
            if last:
                raise ConversionError("the last convolution of a DCGAN generator has no batch norm")
            out[f"blocks.{i}.1.{param}"] = tensor
    return out


def tutorial_state(loaded: object, where: str) -> dict[str, torch.Tensor]:
    """The generator state dict in studio layout from what ``torch.load`` read in the DCGAN-tutorial layout.

    Accepts the generator's state dict itself or a training checkpoint holding it as ``netG_state_dict``
    (the tutorial's name).

    Raises:
        ConversionError: ``loaded`` holds no generator state dict, or one in another layout.
    """
    if isinstance(loaded, dict) and "netG_state_dict" in loaded:
        loaded = loaded["netG_state_dict"]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        keys = ", ".join(map(str, list(loaded)[:5])) if isinstance(loaded, dict) else type(loaded).__name__
        raise ConversionError(f"{where} holds {keys}, not a generator state dict (nor one under netG_state_dict)")
    return sequential_dcgan_state(loaded)


def tutorial_config(state: dict[str, torch.Tensor], resolution: int, z_dim: int, class_names: tuple[str, ...] = (),
                    **about: str) -> ModelConfig:
    """The DCGAN config of a studio-layout state dict (from ``tutorial_state``), its widths read off the tensors.

    Args:
        state: The generator's tensors in studio layout.
        resolution: The side the user says the network draws; checked against its layer count.
        z_dim: The latent size the user says it reads; with the classes, checked against its first layer.
        class_names: Names of the classes a conditional generator concatenates to z, in order.
        **about: ``title``, ``description``, ``license``, ``author``, ``source`` for the config.

    Raises:
        ConversionError: The layer count or the first layer's inputs contradict what the user said.
    """
    first = state["blocks.0.0.weight"]  # [z_dim + classes, widest, 4, 4]
    to_rgb = state["to_rgb.0.weight"]  # [base_width, channels, 4, 4]
    convolutions = sum(1 for tensor in state.values() if tensor.dim() == 4)
    drawn = 2 ** (convolutions + 1)  # 4x4 after the first, then each later one doubles the side
    if resolution != drawn:
        raise ConversionError(f"the generator has {convolutions} convolutions, so it draws {drawn}x{drawn}, "
                              f"not {resolution}x{resolution}")
    if first.shape[0] != z_dim + len(class_names):
        raise ConversionError(f"the generator reads {first.shape[0]} inputs, not a latent of {z_dim} "
                              f"plus {len(class_names)} classes")
    arch = {"resolution": resolution, "z_dim": z_dim, "base_width": int(to_rgb.shape[0]),
            "num_classes": len(class_names), "dropout": 0.0, "channels": int(to_rgb.shape[1])}
    return ModelConfig(architecture="dcgan", arch=arch, class_names=class_names, **about)
