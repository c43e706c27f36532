"""Pure tensor functions on latents: seeded sampling, truncation, class vectors."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch


def seed_latents(seeds: Iterable[int], z_dim: int) -> torch.Tensor:
    """The latent of each seed, ``[N, z_dim]`` float32 on the CPU.

    Seed ``s`` is ``numpy.random.RandomState(s).randn(z_dim)``, the convention of NVIDIA's StyleGAN
    tools, so a seed names the same latent here as there, whatever the batch or the device.
    """
    rows = [np.random.RandomState(check_seed(s)).randn(z_dim) for s in seeds]
    if not rows:
        return torch.empty(0, z_dim)
    return torch.from_numpy(np.stack(rows)).float()


def check_seed(seed: int) -> int:
    """Return ``seed`` if numpy accepts it (0 <= seed < 2**32), else raise ValueError."""
    if not 0 <= int(seed) < 2**32:
        raise ValueError(f"seed {seed} is out of range: seeds run from 0 to {2**32 - 1}")
    return int(seed)


def truncate(z: torch.Tensor, psi: float) -> torch.Tensor:
    """Pull latents towards the mean of the prior (zero): ``psi = 1`` leaves them, ``0`` gives the mean."""
    return z * psi


def class_vector(weights: Mapping[str, float] | str | None, class_names: Sequence[str]) -> torch.Tensor:
    """A class vector ``[num_classes]`` summing to 1 from a class name or ``{name: weight}`` blend.

    ``None`` gives the uniform blend, which for a model with no classes is an empty vector.

    Raises:
        ValueError: An unknown class name, a negative weight, or weights that sum to zero.
    """
    n = len(class_names)
    if weights is None:
        return torch.full((n,), 1.0 / n) if n else torch.empty(0)
    if isinstance(weights, str):
        weights = {weights: 1.0}
    if not n:
        raise ValueError("this model has no classes")
    vec = torch.zeros(n)
    for name, w in weights.items():
        if name not in class_names:
            raise ValueError(f"unknown class {name!r}; this model's classes: {', '.join(class_names)}")
        if w < 0:
            raise ValueError(f"class weight for {name!r} is negative ({w})")
        vec[class_names.index(name)] += float(w)
    total = vec.sum()
    if total <= 0:
        raise ValueError("class weights sum to zero: give at least one class a positive weight")
    return vec / total


def parse_seeds(text: str, limit: int = 10_000) -> list[int]:
    """Parse seeds written as ``0-7``, ``1,5,9`` or mixes such as ``0-3,10``, keeping their order.

    Raises:
        ValueError: A malformed part, a reversed range, a seed out of range, or more than ``limit`` seeds.
    """
    seeds: list[int] = []
    for part in str(text).replace(" ", "").split(","):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ValueError(f"bad seed {part!r}: write seeds like 0-7, 1,5,9 or 0-3,10")
        first, last = int(lo), int(hi) if sep else int(lo)
        if last < first:
            raise ValueError(f"bad seed range {part!r}: the end is below the start")
        if len(seeds) + last - first + 1 > limit:
            raise ValueError(f"too many seeds: at most {limit}")
        seeds.extend(check_seed(s) for s in range(first, last + 1))
    if not seeds:
        raise ValueError("no seeds given: write seeds like 0-7, 1,5,9 or 0-3,10")
    return seeds
