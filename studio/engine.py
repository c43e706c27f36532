"""Image generation: the one path from a request (seeds, classes, truncation) to uint8 pixels."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from studio import latent
from studio.media import to_uint8
from studio.zoo import LoadedModel


@dataclass(frozen=True)
class Request:
    """What to draw.

    Attributes:
        model: Model name in the zoo.
        seeds: One image per seed.
        classes: A class name or a ``{name: weight}`` blend; None = uniform blend (or no classes).
        truncation: psi; 1 leaves the latent untouched, 0 gives the mean image.
    """

    model: str
    seeds: tuple[int, ...]
    classes: str | Mapping[str, float] | None = None
    truncation: float = 1.0


def request_inputs(model: LoadedModel, request: Request) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The generator inputs for ``request``: z ``[N, z_dim]`` and class vectors ``[N, K]`` (or None), on the CPU.

    Noise is drawn on the CPU from each seed so a seed gives the same latent on every device.
    """
    config = model.config
    z = latent.truncate(latent.seed_latents(request.seeds, config.z_dim), request.truncation)
    if not config.num_classes:
        if request.classes:
            raise ValueError(f"model {model.name!r} has no classes")
        return z, None
    vec = latent.class_vector(request.classes, config.class_names)
    return z, vec.expand(len(z), -1)


@torch.inference_mode()
def run_generator(model: LoadedModel, z: torch.Tensor, c: torch.Tensor | None) -> np.ndarray:
    """One forward pass: latents (and class vectors) -> ``[N, H, W, 3]`` uint8 images."""
    device = next(model.generator.parameters()).device
    c = None if c is None else c.to(device)
    return to_uint8(model.generator(z.to(device), c))


def generate(model: LoadedModel, seeds: Sequence[int], classes: str | Mapping[str, float] | None = None,
             truncation: float = 1.0) -> np.ndarray:
    """Draw one image per seed: ``[N, H, W, 3]`` uint8."""
    z, c = request_inputs(model, Request(model.name, tuple(seeds), classes, truncation))
    return run_generator(model, z, c)
