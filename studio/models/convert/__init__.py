"""Converters from third-party layouts to studio model folders' tensors and configs.

Each reads tensors only and never executes a file: PyTorch files go through ``pytorch_file``
(``torch.load(weights_only=True)``), pickles through ``nvidia_pickle``'s restricted unpickler. A
converter refuses what it cannot convert with ``ConversionError``, in words fit to show a user.

The helpers below serve the converters of StyleGAN2 layouts that do not share the studio's key names
(TensorFlow-era pickles, rosinality checkpoints).
"""

from __future__ import annotations

from typing import Any

import torch

from studio.models.folder import ModelConfig, build_discriminator, build_generator
from studio.models.stylegan2 import fir_filter


class ConversionError(ValueError):
    """A file is unreadable, or its tensors do not fit the layout it claims; the message says which."""


def stylegan2_widths(channels: dict[int, int], where: str) -> dict[str, int]:
    """``channel_base`` and ``channel_max`` that give each block its width (``{side: channels}``) by the studio's
    rule ``min(channel_base // side, channel_max)``.

    Raises:
        ConversionError: No such pair exists, so the studio's StyleGAN2 cannot hold these blocks.
    """
    widest = max(channels.values())
    narrower = [side * width for side, width in channels.items() if width < widest]
    base = max(narrower) if narrower else widest * max(channels)  # all at the cap: any base this large will do
    if any(min(base // side, widest) != width for side, width in channels.items()):
        listing = ", ".join(f"{side}px: {width}" for side, width in sorted(channels.items()))
        raise ConversionError(f"{where}: its block widths ({listing}) follow no channel_base / side rule capped at "
                              f"channel_max, so the studio's StyleGAN2 cannot hold them")
    return {"channel_base": base, "channel_max": widest}


def stylegan2_config(arch: dict[str, Any], where: str, origin: str, dropped: str = "",
                     **about: Any) -> ModelConfig:
    """The config of a StyleGAN2 converted from ``origin``; its description says so, and why its discriminator
    was not kept if ``dropped`` says why (the model then cannot be fine-tuned).

    Raises:
        ConversionError: ``arch`` describes no StyleGAN2 the studio can build.
    """
    note = f"; its discriminator was not kept ({dropped}), so it cannot be fine-tuned" if dropped else "."
    about.setdefault("description", f"A StyleGAN2 converted from {origin}{note}")
    try:
        return ModelConfig("stylegan2", arch, (), **about)
    except ValueError as e:
        raise ConversionError(f"{where} describes no StyleGAN2 the studio can build: {e}") from None


def add_filter_buffers(config: ModelConfig, generator_state: dict[str, torch.Tensor],
                       discriminator_state: dict[str, torch.Tensor] | None) -> None:
    """Put the [1,3,3,1] filter buffers of the studio's StyleGAN2 for ``config`` into the states (D's if given).

    Layouts whose filter is fixed by their code store none (TensorFlow pickles) or store it per layer scaled
    differently (rosinality): their converters check it is the standard one and take the studio's instead.
    """
    for state, build in ((generator_state, build_generator), (discriminator_state, build_discriminator)):
        if state is not None:
            with torch.device("meta"):  # names only: the real network would draw every weight at random
                names = build(config).state_dict()
            state.update({name: fir_filter() for name in names if name.endswith("resample_filter")})
