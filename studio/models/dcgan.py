"""DCGAN generator and discriminator (Radford et al. 2015), optionally class-conditional.

Networks only: no file I/O, no optimizers, no device choice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

RESOLUTIONS = (32, 64, 128, 256)


@dataclass(frozen=True)
class DCGANConfig:
    """Architecture of a DCGAN pair.

    Attributes:
        resolution: Output side in pixels, one of ``RESOLUTIONS``.
        z_dim: Size of the latent vector z.
        base_width: Channels of the last hidden generator block (``ngf``/``ndf`` in the paper's code);
            the first block has ``base_width * resolution / 8``.
        num_classes: 0 for an unconditional model; otherwise the size of the class vector that the
            generator concatenates to z.
        dropout: Dropout probability after the generator's first block (0 = none).
        channels: Image channels.
    """

    resolution: int = 64
    z_dim: int = 100
    base_width: int = 64
    num_classes: int = 0
    dropout: float = 0.0
    channels: int = 3

    def __post_init__(self) -> None:
        if self.resolution not in RESOLUTIONS:
            raise ValueError(f"resolution must be one of {RESOLUTIONS}, not {self.resolution}")
        if self.z_dim < 1 or self.base_width < 1 or self.num_classes < 0 or self.channels < 1:
            raise ValueError(f"invalid DCGAN config: {self}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), not {self.dropout}")

    @property
    def num_ws(self) -> int:
        """No per-layer style inputs: z enters once, at 4x4."""
        return 0

    @property
    def num_upsamplings(self) -> int:
        """Stride-2 layers between the 4x4 start and the output resolution."""
        return int(math.log2(self.resolution)) - 2

    def widths(self) -> list[int]:
        """Channels of each hidden block, from the 4x4 block to the last one."""
        return [self.base_width * 2 ** i for i in reversed(range(self.num_upsamplings))]


class Generator(nn.Module):
    """Maps z (and a class vector) to an image in [-1, 1].

    ``blocks[0]`` reads the latent through a 4x4 transposed convolution; each later block doubles the
    side; ``to_rgb`` makes the image. A conditional generator concatenates the class vector to z, so a
    fractional class vector (a blend) is a valid input. Offers ``face.GeneratorFace``.
    """

    num_style_layers = 0  # the latent enters once, through blocks[0]

    def __init__(self, config: DCGANConfig) -> None:
        super().__init__()
        self.config = config
        widths = config.widths()
        in_ch = config.z_dim + config.num_classes
        blocks = []
        for i, out_ch in enumerate(widths):
            first = i == 0
            layers: list[nn.Module] = [
                nn.ConvTranspose2d(in_ch, out_ch, 4, 1 if first else 2, 0 if first else 1, bias=False),
                nn.BatchNorm2d(out_ch),
                nn.ReLU(inplace=True),
            ]
            if first and config.dropout > 0:
                layers.append(nn.Dropout(config.dropout))
            blocks.append(nn.Sequential(*layers))
            in_ch = out_ch
        self.blocks = nn.ModuleList(blocks)
        self.to_rgb = nn.Sequential(nn.ConvTranspose2d(in_ch, config.channels, 4, 2, 1, bias=False), nn.Tanh())

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """Generate images.

        Args:
            z: Latents ``[N, z_dim]``.
            c: Class vectors ``[N, num_classes]`` (one-hot or a blend); required iff conditional.

        Returns:
            Images ``[N, channels, resolution, resolution]`` in [-1, 1].
        """
        x = self._input(z, c)
        for block in self.blocks:
            x = block(x)
        return self.to_rgb(x)

    def _input(self, z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        """What ``blocks[0]`` reads: z, with the class vector after it if conditional ``[N, z_dim + K, 1, 1]``."""
        if self.config.num_classes:
            if c is None:
                raise ValueError("this generator is class-conditional: pass a class vector")
            z = torch.cat([z, c.to(z.dtype)], dim=1)
        return z[:, :, None, None]

    def draw(self, latents: torch.Tensor, c: torch.Tensor | None = None,
             noise_seeds: Sequence[int] | None = None) -> torch.Tensor:
        """Images from z ``latents [N, z_dim]`` and ``c``, as ``forward``: a DCGAN has no noise inputs."""
        if noise_seeds is not None:
            raise ValueError("a DCGAN has no noise inputs: it draws without noise seeds")
        return self(latents, c)

    def latent_weight(self, layers: tuple[int, int] | None = None) -> torch.Tensor:
        """The first convolution's rows that read z ``[z_dim, widest * 4 * 4]`` (the class rows left out)."""
        if layers is not None:
            raise ValueError("a DCGAN has no style layers: its sliders move the whole latent")
        return self.blocks[0][0].weight[: self.config.z_dim].flatten(1)

    def direction_units(self, directions: torch.Tensor, z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        """Ones: the unit directions already count in z's prior standard deviation."""
        return torch.ones(len(directions))

    def latent_features(self, z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        """The first block's output ``[N, widest * 4 * 4]``; ``c`` is ignored by an unconditional generator."""
        return self.blocks[0](self._input(z, c)).flatten(1)

    def freezable_blocks(self) -> list[nn.Module]:
        """The hidden blocks from the 4x4 one on (``to_rgb`` is never frozen)."""
        return list(self.blocks)

    def bendable_layers(self) -> list[nn.Module]:
        """The hidden blocks, coarse to fine: each outputs feature maps ``[N, C, H, W]`` (network bending)."""
        return list(self.blocks)

    def bendable_channels(self) -> list[int]:
        """How many feature maps each bendable layer outputs."""
        return [block[0].out_channels for block in self.blocks]


class Discriminator(nn.Module):
    """Scores images as real (high) or generated (low), without a sigmoid (losses apply their own).

    Conditioning uses the projection discriminator (Miyato & Koyama 2018): the score gets an inner
    product between the class vector's embedding and the image features. Unlike concatenating the
    label as extra input channels it adds no parameters to every layer, it is the method that trains
    most stably in the conditional-GAN literature, and being linear in the class vector it judges a
    blend of classes consistently with how the generator reads one. Offers ``face.DiscriminatorFace``.
    """

    def __init__(self, config: DCGANConfig) -> None:
        super().__init__()
        self.config = config
        widths = list(reversed(config.widths()))  # [base, 2*base, ...] down to 4x4
        layers: list[nn.Module] = [nn.Conv2d(config.channels, widths[0], 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        blocks = [nn.Sequential(*layers)]
        for in_ch, out_ch in zip(widths[:-1], widths[1:]):
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(in_ch, out_ch, 4, 2, 1, bias=False),
                    nn.BatchNorm2d(out_ch),
                    nn.LeakyReLU(0.2, inplace=True),
                )
            )
        self.blocks = nn.ModuleList(blocks)
        features = widths[-1] * 4 * 4
        self.head = nn.Linear(features, 1)
        self.embed = nn.Linear(config.num_classes, features, bias=False) if config.num_classes else None

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """Score images.

        Args:
            x: Images ``[N, channels, resolution, resolution]`` in [-1, 1].
            c: Class vectors ``[N, num_classes]``; required iff conditional.

        Returns:
            Logits ``[N]``.
        """
        for block in self.blocks:
            x = block(x)
        h = x.flatten(1)  # [N, C * 4 * 4]
        out = self.head(h).squeeze(1)
        if self.embed is not None:
            if c is None:
                raise ValueError("this discriminator is class-conditional: pass a class vector")
            out = out + (self.embed(c.to(h.dtype)) * h).sum(dim=1)
        return out

    def freezable_blocks(self) -> list[nn.Module]:
        """The blocks from the image's side down to 4x4 (the head and class embedding are never frozen)."""
        return list(self.blocks)

    def with_width(self, width: int) -> Discriminator:
        """A fresh discriminator like this one with ``base_width`` ``width`` (each block doubles it)."""
        return Discriminator(replace(self.config, base_width=width))

    def check_batch(self, n: int) -> None:
        """Any batch scores: batch norm over a single image still normalises its 4x4 (or larger) maps."""
