"""Everything about networks: the families, the model folder, and converters from other layouts.

A family is looked up by the architecture name a model folder's config records. Its networks offer
the face in ``studio.models.face``, so that nothing outside this package reaches into their layers.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from studio.models import dcgan, stylegan2


@dataclass(frozen=True)
class Architecture:
    """The classes that make up one architecture family.

    Attributes:
        config: The family's frozen config dataclass (offers ``face.ArchConfig``).
        generator: Built from a config; offers ``face.GeneratorFace``.
        discriminator: Built from a config; offers ``face.DiscriminatorFace``.
    """

    config: type
    generator: type[nn.Module]
    discriminator: type[nn.Module]


ARCHITECTURES: dict[str, Architecture] = {
    "dcgan": Architecture(dcgan.DCGANConfig, dcgan.Generator, dcgan.Discriminator),
    "stylegan2": Architecture(
        stylegan2.StyleGAN2Config, stylegan2.StyleGAN2Generator, stylegan2.StyleGAN2Discriminator
    ),
}


def architecture(name: str) -> Architecture:
    """Return the architecture called ``name``, or raise a ValueError listing the known ones."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(sorted(ARCHITECTURES))}") from None
