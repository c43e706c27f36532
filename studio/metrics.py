"""Metrics on image sets that need no pretrained feature network.

- **Sliced Wasserstein distance** (SWD) on Laplacian-pyramid patches, multi-scale, after Karras et al.
  2018 ("Progressive Growing of GANs", section 5 and appendix D): how far apart two image
  distributions are at each scale, from fine texture (the full-resolution level) to colour and layout
  (the 16x16 level). Lower is closer; it is a relative measure, comparable between runs on the same
  data set, not across data sets.
- **Memorization guard**: for each generated image, the nearest data-set image in pixel space at a
  reduced size, and the fraction of samples that are near-copies of an artwork.

Images are uint8 ``[N, H, W, C]`` arrays (numpy or torch), as the engine and the media helpers use,
or float tensors ``[N, C, H, W]`` in [-1, 1], as generators and the training loop use. Every random
draw comes from an explicit ``torch.Generator``, so a metric is reproducible given its seed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

Images = np.ndarray | torch.Tensor

MIN_LEVEL = 16  # the coarsest pyramid level, as in the paper
PATCH = 7  # side of each patch descriptor (7x7 neighbourhoods, as in the paper)
IMAGE_CHUNK = 64  # images per pyramid pass: bounds memory for large sets
PROJECTION_FLOATS = 2**24  # floats per projection chunk (64 MiB per set), bounds the sort's memory
# A near-copy is closer than this RMS pixel difference (0-1 scale, at 32x32) to some data-set image.
# Measured: distinct images of one set stay apart even when they share subject and palette (nearest
# distinct neighbour among 500 eyes drawn by the default model: min 0.059, 1st percentile 0.071; 300
# two-tone prints made from them by scripts/demo_dataset.py: min 0.051; the same latent drawn as two
# eye colours: min 0.044), while degraded copies of a 128px image stay under 0.027 (JPEG quality 20:
# 0.024; Gaussian noise of std 0.1: 0.026). 0.035 leaves a margin on both sides.
NEAR_COPY_THRESHOLD = 0.035


def image_shape(images: Images) -> tuple[int, int, int, int]:
    """``(N, C, H, W)`` of uint8 ``[N, H, W, C]`` or float ``[N, C, H, W]`` images."""
    if images.ndim != 4:
        raise ValueError(f"expected a batch of images (4 dimensions), got shape {tuple(images.shape)}")
    n, a, b, c = images.shape
    return (n, c, a, b) if _is_uint8(images) else (n, a, b, c)


def _is_uint8(images: Images) -> bool:
    return images.dtype in (np.uint8, torch.uint8)


def _float_chunks(images: Images, chunk: int = IMAGE_CHUNK) -> Iterator[torch.Tensor]:
    """Consecutive chunks of ``images`` as float32 ``[B, C, H, W]`` in [-1, 1].

    Converting chunk by chunk keeps a large uint8 set from being copied whole as float32 (4x its size).
    """
    for start in range(0, len(images), chunk):
        part = images[start : start + chunk]
        # Views such as a flip have negative strides, which torch cannot wrap without a copy.
        part = torch.from_numpy(np.ascontiguousarray(part)) if isinstance(part, np.ndarray) else part
        if _is_uint8(part):
            yield part.permute(0, 3, 1, 2).float() / 127.5 - 1  # [B, C, H, W]
        else:
            yield part.float()


def _device(images: Images) -> torch.device:
    return images.device if isinstance(images, torch.Tensor) else torch.device("cpu")


# --- Sliced Wasserstein distance -------------------------------------------------------------------


@dataclass(frozen=True)
class SWDResult:
    """A multi-scale SWD, times 1e3 as in the paper.

    Attributes:
        levels: SWD per pyramid level, keyed by the level's (shorter) side in pixels, finest first
            (e.g. ``{128: ..., 64: ..., 32: ..., 16: ...}`` for 128px images).
        mean: The average over the levels.
    """

    levels: dict[int, float]
    mean: float


def pyramid_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """The ``(h, w)`` of each Laplacian-pyramid level, finest first, down to a shorter side of 16.

    Raises:
        ValueError: A shorter side under 16 pixels.
    """
    if min(height, width) < MIN_LEVEL:
        raise ValueError(f"SWD needs images of at least {MIN_LEVEL}x{MIN_LEVEL} pixels, got {height}x{width}")
    sizes = [(height, width)]
    while (min(sizes[-1]) + 1) // 2 >= MIN_LEVEL:
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes


def _blur(x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """5x5 binomial (Gaussian) filter per channel, mirrored at the borders; ``x`` is ``[B, C, H, W]``."""
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=x.device) / 16
    c = x.shape[1]
    x = F.pad(x, (2, 2, 2, 2), mode="reflect")
    # Separable: a row pass then a column pass, each depthwise (groups=C).
    x = F.conv2d(x, (k * gain).view(1, 1, 1, 5).expand(c, 1, 1, 5), groups=c)
    return F.conv2d(x, k.view(1, 1, 5, 1).expand(c, 1, 5, 1), groups=c)


def laplacian_pyramid(x: torch.Tensor) -> list[torch.Tensor]:
    """The Laplacian pyramid of ``x`` ``[B, C, H, W]``: band-pass levels, then the coarsest Gaussian level.

    Each band-pass level is an image minus the upsampled blur of its half-size version, so it holds
    the detail of one octave; the last level (shorter side 16 to 31) holds what remains (colour, layout).
    """
    sizes = pyramid_sizes(*x.shape[-2:])
    levels = []
    for h, w in sizes[1:]:
        down = _blur(x)[..., ::2, ::2]  # [B, C, h, w]
        up = torch.zeros_like(x)
        up[..., ::2, ::2] = down
        # Zeros fill three of every four pixels, so the filter's gain is 4 to keep brightness.
        levels.append(x - _blur(up, gain=4.0))
        x = down
    levels.append(x)
    return levels


def _patch_sites(n: int, count: int, per_image: int, generator: torch.Generator) -> torch.Tensor:
    """Which image each of ``count`` patches comes from, sorted, ``[count]``.

    With ``count == n * per_image`` every image gives ``per_image`` patches (the paper's sampling);
    a larger set gives ``count`` of its ``n * per_image`` patch slots, drawn without replacement: the
    same as subsampling its full descriptor set, without extracting the patches that would be dropped.
    """
    slots = torch.arange(n * per_image)
    if count < len(slots):
        slots = slots[torch.randperm(len(slots), generator=generator)[:count]].sort().values
    return slots // per_image


def _descriptors(images: Images, count: int, per_image: int, generator: torch.Generator) -> list[torch.Tensor]:
    """``count`` random 7x7 patches from each pyramid level of ``images``: ``[count, 49, C]`` per level."""
    n, c, h, w = image_shape(images)
    device = _device(images)
    sizes = pyramid_sizes(h, w)
    owner = _patch_sites(n, count, per_image, generator)  # [count], sorted by image
    # Top-left corners, drawn on the CPU so the sampling is the same on every device.
    corners = [(torch.randint(lh - PATCH + 1, (count,), generator=generator),
                torch.randint(lw - PATCH + 1, (count,), generator=generator)) for lh, lw in sizes]
    offsets = torch.arange(PATCH, device=device)
    out = [torch.empty(count, PATCH * PATCH, c, device=device) for _ in sizes]
    for start, chunk in zip(range(0, n, IMAGE_CHUNK), _float_chunks(images)):
        lo, hi = torch.searchsorted(owner, torch.tensor([start, start + len(chunk)])).tolist()
        if lo == hi:
            continue
        idx = (owner[lo:hi] - start).to(device)
        for level, (ys, xs), dest in zip(laplacian_pyramid(chunk.to(device)), corners, out):
            rows = (ys[lo:hi].to(device)[:, None] + offsets)[:, :, None]  # [m, 7, 1]
            cols = (xs[lo:hi].to(device)[:, None] + offsets)[:, None, :]  # [m, 1, 7]
            patches = level.permute(0, 2, 3, 1)[idx[:, None, None], rows, cols]  # [m, 7, 7, C]
            dest[lo:hi] = patches.reshape(hi - lo, PATCH * PATCH, c)
    return out


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, directions: int, generator: torch.Generator) -> float:
    """Sliced Wasserstein-1 distance between two equal-sized point sets ``[M, D]``.

    Projects both sets onto random unit directions; in one dimension the optimal transport pairs the
    sorted values, so the distance along a direction is the mean absolute difference of the sorted
    projections. The result is the average over ``directions`` directions.
    """
    if a.shape != b.shape:
        raise ValueError(f"point sets differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    m, d = a.shape
    chunk = max(1, min(directions, PROJECTION_FLOATS // m))
    total = 0.0
    for done in range(0, directions, chunk):
        k = min(chunk, directions - done)
        dirs = torch.randn(k, d, generator=generator).to(a.device)
        dirs /= dirs.norm(dim=1, keepdim=True)  # [k, D]
        # [k, M]: sorting along the last (contiguous) dimension is the fast path.
        pa = (dirs @ a.T).sort(dim=1).values
        pb = (dirs @ b.T).sort(dim=1).values
        total += (pa - pb).abs().mean(dim=1).sum().item()
    return total / directions


def swd(a: Images, b: Images, *, generator: torch.Generator | None = None, patches_per_image: int = 128,
        directions: int = 512) -> SWDResult:
    """Multi-scale sliced Wasserstein distance between two image sets (times 1e3, as in the paper).

    Per pyramid level: ``patches_per_image`` random 7x7 patches from each image (when one set is
    larger, its descriptors are subsampled to the other's count), each channel normalised with the
    mean and standard deviation of both sets together, then the sliced Wasserstein distance over
    ``directions`` random directions.

    The paper's reference code normalises each set with its own statistics; that makes the distance
    blind to a shift or scaling of any channel at any level, such as a palette that is too dark or too
    saturated at the 16x16 level. Pooled statistics keep the levels and channels on one scale, as the
    paper intends, while an error of colour or contrast still counts, which is what a fine-tune on an
    artist's palette must learn. The distance is symmetric and does not change under one affine map of
    pixel values applied to both sets (so uint8 and [-1, 1] inputs agree).

    Args:
        a: One image set: uint8 ``[N, H, W, C]`` or float ``[N, C, H, W]`` in [-1, 1].
        b: The other, of the same resolution and channels (any count).
        generator: Source of every random draw (patches, directions); None = a generator seeded
            with 0, so the default is deterministic too.
        patches_per_image: Patches per image per level (the paper: 128).
        directions: Random projection directions per level (the paper: 512).

    Returns:
        The SWD per level and its mean.

    Raises:
        ValueError: Empty sets, different shapes, or images under 16x16.
    """
    (na, ca, ha, wa), (nb, cb, hb, wb) = image_shape(a), image_shape(b)
    if (ca, ha, wa) != (cb, hb, wb):
        raise ValueError(f"image sets differ: {ca}x{ha}x{wa} vs {cb}x{hb}x{wb} (channels x height x width)")
    if not na or not nb:
        raise ValueError("SWD needs at least one image in each set")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    count = min(na, nb) * patches_per_image
    levels = {}
    for (h, w), da, db in zip(pyramid_sizes(ha, wa), _descriptors(a, count, patches_per_image, gen),
                              _descriptors(b, count, patches_per_image, gen)):
        both = torch.cat([da, db])  # [2 * count, 49, C]
        mean = both.mean(dim=(0, 1))
        std = both.std(dim=(0, 1)).clamp_min(1e-8)  # a flat channel (constant images) must not divide by 0
        da, db = ((d - mean) / std for d in (da, db))
        levels[min(h, w)] = 1e3 * sliced_wasserstein(da.flatten(1), db.flatten(1), directions, gen)
    return SWDResult(levels, sum(levels.values()) / len(levels))


# --- Memorization guard ----------------------------------------------------------------------------


@dataclass(frozen=True)
class MemorizationReport:
    """How close each generated image comes to the data set.

    Attributes:
        indices: ``[N]`` index of each sample's nearest data-set image.
        distances: ``[N]`` RMS pixel difference to it at the reduced size, on a 0-1 pixel scale.
        threshold: Distances below it count as near-copies.
        fraction: The fraction of samples that are near-copies.
    """

    indices: torch.Tensor
    distances: torch.Tensor
    threshold: float
    fraction: float


def _reduced(images: Images, size: int) -> torch.Tensor:
    """``images`` area-averaged to ``size x size``, flattened, on a 0-1 scale: ``[N, C * size * size]``."""
    n, c = image_shape(images)[:2]
    out = torch.empty(n, c * size * size)  # filled in place: no second copy from concatenating chunks
    for start, x in zip(range(0, n, 256), _float_chunks(images, 256)):
        out[start : start + len(x)] = F.interpolate(x, size=(size, size), mode="area").flatten(1).cpu()
    return out.add_(1).div_(2)


def nearest_neighbours(generated: Images, dataset: Images, size: int = 32,
                       chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """For each generated image, the nearest data-set image in pixel space at ``size x size``.

    Both sets are area-averaged to ``size`` first (so they may differ in resolution), which keeps the
    search cheap and ignores pixel-level noise: a copy that is shifted in colour slightly or
    re-encoded stays close. 1,000 samples against 10,000 128px images take about 3 s and 300 MB.

    Args:
        generated: Samples, uint8 ``[N, H, W, C]`` or float ``[N, C, H, W]`` in [-1, 1].
        dataset: The data set, in either form, same channels.
        size: The side both sets are reduced to.
        chunk: Samples compared at a time (the score matrix is ``chunk x len(dataset)``).

    Returns:
        ``(indices [N], distances [N])``: the nearest data-set image of each sample and the RMS pixel
        difference to it on a 0-1 scale (0 = identical, 1 = black against white).
    """
    if not len(dataset):
        raise ValueError("the data set is empty")
    g, d = _reduced(generated, size), _reduced(dataset, size)  # [N, D], [M, D]
    if g.shape[1] != d.shape[1]:
        raise ValueError(f"samples and data set differ in channels ({g.shape[1]} vs {d.shape[1]} values per image)")
    d_sq = d.square().sum(dim=1)  # [M]
    # |g - d|^2 = |g|^2 - 2 g.d + |d|^2, and |g|^2 does not change the argmin over d: one matmul a chunk.
    indices = torch.cat([(d_sq - 2 * part @ d.T).argmin(dim=1) for part in g.split(chunk)])  # [N]
    # Recompute the chosen distances directly: the expansion loses precision exactly where it matters
    # (copies, at distance ~0).
    distances = (g - d[indices]).square().mean(dim=1).sqrt()
    return indices, distances


def memorization(generated: Images, dataset: Images, threshold: float = NEAR_COPY_THRESHOLD,
                 size: int = 32) -> MemorizationReport:
    """Nearest data-set image of each sample and the fraction of samples that are near-copies.

    Args:
        generated: Samples, uint8 ``[N, H, W, C]`` or float ``[N, C, H, W]`` in [-1, 1].
        dataset: The data set, in either form.
        threshold: RMS pixel difference (0-1 scale) under which a sample is a near-copy; the default
            is explained at ``NEAR_COPY_THRESHOLD``.
        size: The side both sets are reduced to before comparing.
    """
    if not len(generated):
        raise ValueError("no samples to check")
    indices, distances = nearest_neighbours(generated, dataset, size)
    return MemorizationReport(indices, distances, threshold, (distances < threshold).float().mean().item())


TRACKING_SAMPLES = 64  # samples per SWD measurement during training: ~1.5 s at 128 px on 2 cores


class SWDTracker:
    """SWD of a training run's samples against a fixed random subset of its data set, step by step.

    Pass it as ``train.finetune``'s ``sample_fn``; ``history`` holds ``{"step", "swd"}`` entries and
    ``lineage`` the facts a finished model records (the data set's size and the last SWD).

    Args:
        images: The data set ``[N, 3, R, R]`` in [-1, 1].
        count: How many data-set images to compare with (the run should pass as many samples).
        history: Earlier entries, when a resumed run carries its curve on.
    """

    def __init__(self, images: torch.Tensor, count: int, history: list[dict[str, float]] | None = None) -> None:
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
        self.real = images[order[:count]]
        self.history = list(history or [])
        self.lineage: dict[str, float] = {"dataset_images": len(images)}

    def __call__(self, step: int, samples: np.ndarray) -> None:
        score = swd(samples, self.real, generator=torch.Generator().manual_seed(0)).mean
        self.history.append({"step": step, "swd": score})
        self.lineage["swd"] = score
