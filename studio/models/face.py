"""The face every network family shows the rest of the studio.

Nothing outside ``studio.models`` reaches into a network's layers: semantic directions, fine-tuning
and the zoo ask a generator or discriminator for what they need through these few members, so a
new family plugs in by offering them too. "The latent" is z for DCGAN and the mapped w for StyleGAN2.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class ArchConfig(Protocol):
    """What the studio reads from any architecture's frozen config dataclass."""

    resolution: int  # output side in pixels
    z_dim: int  # latent size
    num_classes: int  # 0 for an unconditional model
    num_ws: int  # per-layer style inputs; 0 for a family whose latent enters once (DCGAN)


@runtime_checkable
class GeneratorFace(Protocol):
    """A generator: ``generator(z [N, z_dim], c [N, K] or None) -> images [N, C, R, R]`` in [-1, 1].

    Attributes:
        num_style_layers: How many layers take a style input of their own (StyleGAN's per-layer w);
            0 for a family whose latent enters once, like DCGAN.
    """

    num_style_layers: int

    def draw(self, latents: torch.Tensor, c: torch.Tensor | None = None,
             noise_seeds: Sequence[int] | None = None) -> torch.Tensor:
        """Images from the drawing latents: z ``[N, z_dim]`` (with ``c``) for DCGAN, styles
        ``[N, num_style_layers, w_dim]`` for StyleGAN2 (made by ``StyleFace.styles``), with per-image
        noise seeds where the family has noise inputs."""
        ...

    def latent_weight(self, layers: tuple[int, int] | None = None) -> torch.Tensor:
        """The rows of the layers that read the latent, one per latent dimension ``[z_dim or w_dim, F]``
        (SeFa); ``layers`` (first, last) narrows it to those style layers."""
        ...

    def latent_features(self, z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        """Features of ``z`` (and class vectors ``c``) to find directions in, ``[N, F]`` (for GANSpace PCA):
        the first layer's output for DCGAN, w for StyleGAN2."""
        ...

    def direction_units(self, directions: torch.Tensor, z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        """How far one slider unit moves along each unit direction ``[k, D]`` in the latent: the spread of
        the samples ``z`` (and ``c``) along it, so slider values mean the same on every family."""
        ...

    def freezable_blocks(self) -> list[nn.Module]:
        """The network's blocks from coarse to fine; fine-tuning freezes the first k."""
        ...

    def bendable_layers(self) -> list[nn.Module]:
        """Layers whose output feature maps ``[N, C, H, W]`` network bending transforms, coarse to fine."""
        ...

    def bendable_channels(self) -> list[int]:
        """How many feature maps each of ``bendable_layers`` outputs (C)."""
        ...


@runtime_checkable
class StyleFace(GeneratorFace, Protocol):
    """A generator with per-layer styles (``num_style_layers > 0``): truncation, mixing and slider edits
    happen on its styles, between ``styles`` and ``draw``."""

    def styles(self, z: torch.Tensor, c: torch.Tensor | None, truncation_psi: float = 1.0) -> torch.Tensor:
        """Styles ``[N, num_style_layers, w_dim]`` for z (and c), truncated toward the mean style by psi."""
        ...


@runtime_checkable
class DiscriminatorFace(Protocol):
    """A discriminator: ``discriminator(images, c or None) -> logits [N]``."""

    def freezable_blocks(self) -> list[nn.Module]:
        """The network's blocks from fine (the image) to coarse; fine-tuning freezes the first k (FreezeD)."""
        ...

    def with_width(self, width: int) -> nn.Module:
        """A fresh discriminator of the same family whose image-side block has ``width`` channels and every
        other block as many in proportion (a lighter critic, for quick fine-tunes)."""
        ...

    def check_batch(self, n: int) -> None:
        """Raise ValueError, in a sentence, when the network cannot score ``n`` images in one pass."""
        ...
