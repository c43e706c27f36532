"""Differentiable augmentation (DiffAugment, Zhao et al. 2020) for training GANs on small data sets.

The same random transforms are applied to real and generated images before the discriminator sees
them, and gradients flow through them to the generator, so the discriminator cannot memorise a
few hundred images and the generator is not taught to reproduce the augmentations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

POLICIES = ("color", "translation", "cutout")


def diff_augment(x: torch.Tensor, policy: tuple[str, ...] = POLICIES, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
    """Apply the ``policy`` transforms to a batch ``[N, C, H, W]`` in [-1, 1], differentiably.

    Randomness comes only from ``generator`` (on the batch's device), so a seeded run repeats exactly.
    """
    for name in policy:
        if name not in POLICIES:
            raise ValueError(f"unknown augmentation {name!r}; choose from {', '.join(POLICIES)}")
        x = _TRANSFORMS[name](x, generator)
    return x


def _rand(x: torch.Tensor, generator: torch.Generator | None, *shape: int) -> torch.Tensor:
    return torch.rand(x.size(0), *shape, generator=generator, device=x.device, dtype=x.dtype)


def _color(x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    x = x + (_rand(x, g, 1, 1, 1) - 0.5)  # brightness
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_rand(x, g, 1, 1, 1) * 2) + mean  # saturation
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (_rand(x, g, 1, 1, 1) + 0.5) + mean  # contrast


def _translation(x: torch.Tensor, g: torch.Generator | None, ratio: float = 0.125) -> torch.Tensor:
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = (_rand(x, g, 1, 1) * (2 * sh + 1)).long().clamp_max(2 * sh) - sh  # [N, 1, 1] in [-sh, sh]
    dx = (_rand(x, g, 1, 1) * (2 * sw + 1)).long().clamp_max(2 * sw) - sw
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy).clamp(-1, h)  # -1/h index the zero pad
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx).clamp(-1, w)
    padded = F.pad(x, [1, 1, 1, 1])  # [N, C, H + 2, W + 2]
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    return padded.permute(0, 2, 3, 1)[batch, rows + 1, cols + 1].permute(0, 3, 1, 2)


def _cutout(x: torch.Tensor, g: torch.Generator | None, ratio: float = 0.5) -> torch.Tensor:
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = (_rand(x, g, 1, 1) * (h + 1 - ch % 2)).long()  # centre of the hole, [N, 1, 1]
    cx = (_rand(x, g, 1, 1) * (w + 1 - cw % 2)).long()
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    top, left = cy - ch // 2, cx - cw // 2
    hole = (ys >= top) & (ys < top + ch) & (xs >= left) & (xs < left + cw)  # [N, H, W]
    return x * (~hole).unsqueeze(1).to(x.dtype)


_TRANSFORMS = {"color": _color, "translation": _translation, "cutout": _cutout}
