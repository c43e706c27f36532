"""Pure tensor functions on latents: seeded sampling, truncation, class vectors."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from numbers import Real

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


# The bounds every image's numbers keep, whoever sets them (sliders, recipes, the command line):
MAX_TRUNCATION = 1.5  # psi above 1 exaggerates; far beyond, a generator draws noise
MAX_EDIT = 5.0  # slider values, in the latent's standard deviations; a latent lies within about 3
MAX_CLASS_WEIGHT = 1000.0  # weights are relative (normalised when drawn): 1000:1 is already 99.9% one class


MAX_SEED = 2**32 - 1  # numpy's RandomState takes seeds below 2**32


def check_seed(seed: int) -> int:
    """Return ``seed`` as an int if numpy accepts it (a whole number, 0 <= seed < 2**32), else raise ValueError."""
    try:
        whole = int(seed)
    except (TypeError, ValueError, OverflowError):  # None, NaN, infinity, text
        whole = None
    if whole is None or isinstance(seed, bool) or whole != seed:
        raise ValueError(f"seed {seed!r} is not a whole number: seeds run from 0 to {MAX_SEED}")
    if not 0 <= whole <= MAX_SEED:
        raise ValueError(f"seed {seed} is out of range: seeds run from 0 to {MAX_SEED}")
    return whole


def check_number(value: float, what: str, low: float, high: float) -> float:
    """Return ``value`` as a float if it is a finite number from ``low`` to ``high``, else raise ValueError.

    NaN and infinity never pass: a generator turns them into black images, and JSON cannot hold them.
    """
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"{what} must be a finite number from {low:g} to {high:g}, not {value!r}")
    return float(value)


def check_truncation(psi: float) -> float:
    """Return ``psi`` as a float if it is a usable truncation (0 to ``MAX_TRUNCATION``), else raise ValueError."""
    return check_number(psi, "truncation (psi)", 0.0, MAX_TRUNCATION)


def check_class_weights(weights: Mapping[str, float]) -> None:
    """Raise ValueError unless every weight of a ``{name: weight}`` blend is from 0 to ``MAX_CLASS_WEIGHT``."""
    for name, w in weights.items():
        if not isinstance(name, str):
            raise ValueError(f"class names are text, not {name!r}")
        check_number(w, f"the weight of class {name!r}", 0.0, MAX_CLASS_WEIGHT)


def check_edits(edits: Iterable[tuple[int, float]]) -> None:
    """Raise ValueError unless every ``(direction index, value)`` pair has an index >= 0 and a value within ``MAX_EDIT``."""
    for index, value in edits:
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise ValueError(f"slider numbers are whole numbers from 0, not {index!r}")
        check_number(value, f"slider {index}", -MAX_EDIT, MAX_EDIT)


def check_finite(t: torch.Tensor, what: str) -> None:
    """Raise ValueError if tensor ``t`` holds NaN or infinity."""
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{what} must be finite numbers: these hold NaN or infinity")


def truncate(z: torch.Tensor, psi: float) -> torch.Tensor:
    """Pull latents towards the mean of the prior (zero): ``psi = 1`` leaves them, ``0`` gives the mean."""
    return z * check_truncation(psi)


def class_vector(weights: Mapping[str, float] | str | None, class_names: Sequence[str]) -> torch.Tensor:
    """A class vector ``[num_classes]`` summing to 1 from a class name or ``{name: weight}`` blend.

    ``None`` gives the uniform blend, which for a model with no classes is an empty vector.

    Raises:
        ValueError: An unknown class name, a weight that is negative, too large or not finite, or
            weights that sum to zero.
    """
    n = len(class_names)
    if weights is None:
        return torch.full((n,), 1.0 / n) if n else torch.empty(0)
    if isinstance(weights, str):
        weights = {weights: 1.0}
    if not n:
        raise ValueError("this model has no classes")
    check_class_weights(weights)
    vec = torch.zeros(n)
    for name, w in weights.items():
        if name not in class_names:
            raise ValueError(f"unknown class {name!r}; this model's classes: {', '.join(class_names)}")
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


def sefa_directions(weight: torch.Tensor, k: int) -> torch.Tensor:
    """Closed-form factorization (SeFa, Shen & Zhou 2021): the top-``k`` semantic directions in z.

    Args:
        weight: The first layer's weight restricted to the rows that read z, as ``[z_dim, out]``
            (for a transposed convolution: ``weight[:z_dim].flatten(1)``).
        k: How many directions.

    Returns:
        ``[k, z_dim]`` orthonormal rows: the eigenvectors of ``A A^T`` with the largest eigenvalues,
        i.e. the unit latents the first layer's output moves most along.
    """
    a = weight.detach().double()
    eigenvalues, eigenvectors = torch.linalg.eigh(a @ a.T)  # ascending order
    top = eigenvectors[:, eigenvalues.argsort(descending=True)[:k]].T
    return _canonical_sign(top).float()


def pca_directions(latents: torch.Tensor, features: torch.Tensor, k: int) -> torch.Tensor:
    """GANSpace (Härkönen et al. 2020): principal directions of early features, mapped back to z.

    Args:
        latents: The sampled latents ``[N, z_dim]``.
        features: The early layer's activations for them, flattened ``[N, D]``.
        k: How many directions.

    Returns:
        ``[k, z_dim]`` orthonormal rows, in order of explained feature variance. Each principal
        component's coordinates are regressed linearly onto z (as GANSpace does for BigGAN), then the
        set is orthonormalised so slider values stay independent and in units of the prior's std.
    """
    x = features.float() - features.float().mean(0)
    # PCA through the [N, N] Gram matrix: early layers are wide (D >> N), and x x^T = U S^2 U^T
    # gives the principal coordinates U S directly, far cheaper than an SVD of x itself.
    eigenvalues, u_vecs = torch.linalg.eigh((x @ x.T).double())  # ascending
    top = eigenvalues.argsort(descending=True)[:k]
    coords = u_vecs[:, top] * eigenvalues[top].clamp_min(0).sqrt()  # [N, k]
    u = torch.linalg.lstsq(coords, latents.double()).solution  # [k, z_dim]: coords @ u ~= z
    q, _ = torch.linalg.qr(u.T)  # Gram-Schmidt in order keeps the leading direction leading
    return _canonical_sign(q.T).float()


def _canonical_sign(directions: torch.Tensor) -> torch.Tensor:
    # Eigen and singular vectors have no inherent sign; fix one (largest entry positive) so a
    # slider pushes the same way on every machine and every run.
    idx = directions.abs().argmax(dim=1, keepdim=True)
    return directions * directions.gather(1, idx).sign()


def lerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Linear interpolation between ``a`` (t = 0) and ``b`` (t = 1)."""
    return a + (b - a) * t


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation of the last dimension: keeps a Gaussian latent's norm typical mid-way.

    Falls back to lerp when the vectors are (nearly) parallel, where the arc is undefined.
    """
    a64, b64 = a.double(), b.double()
    cos = (a64 * b64).sum(-1, keepdim=True) / (a64.norm(dim=-1, keepdim=True) * b64.norm(dim=-1, keepdim=True))
    omega = torch.arccos(cos.clamp(-1, 1))
    so = torch.sin(omega)
    if so.abs().min() < 1e-6:
        return lerp(a, b, t)
    out = (torch.sin((1 - t) * omega) / so) * a64 + (torch.sin(t * omega) / so) * b64
    return out.to(a.dtype)


EASINGS = {
    "linear": lambda t: t,
    "ease-in-out": lambda t: 0.5 - 0.5 * math.cos(math.pi * t),
}


def path_times(keyframes: int, frames_per_segment: int, loop: bool, easing: str = "linear") -> list[tuple[int, float]]:
    """The (segment start keyframe, eased t) of every frame of a path through ``keyframes``.

    A segment's frames run from its start keyframe (t = 0) up to, not including, its end keyframe,
    so a path has ``frames_per_segment * segments`` frames; ``loop`` adds the segment from the last
    keyframe back to the first.
    """
    if keyframes < 2:
        raise ValueError("a path needs at least 2 keyframes")
    if frames_per_segment < 1:
        raise ValueError("frames per segment must be at least 1")
    if easing not in EASINGS:
        raise ValueError(f"unknown easing {easing!r}; choose one of {', '.join(EASINGS)}")
    segments = keyframes if loop else keyframes - 1
    ease = EASINGS[easing]
    return [(s, ease(f / frames_per_segment)) for s in range(segments) for f in range(frames_per_segment)]

