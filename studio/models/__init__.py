"""Network definitions, looked up by the architecture name stored in a model folder's config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from studio.models import dcgan


@dataclass(frozen=True)
class Architecture:
    """The classes that make up one architecture family."""

    config: type
    generator: type[nn.Module]
    discriminator: type[nn.Module]


ARCHITECTURES: dict[str, Architecture] = {
    "dcgan": Architecture(dcgan.DCGANConfig, dcgan.Generator, dcgan.Discriminator),
}


def architecture(name: str) -> Architecture:
    """Return the architecture called ``name``, or raise a ValueError listing the known ones."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(sorted(ARCHITECTURES))}") from None


def build_generator(name: str, kwargs: dict[str, Any]) -> nn.Module:
    """Build an untrained generator of architecture ``name`` from its config keyword arguments."""
    arch = architecture(name)
    return arch.generator(arch.config(**kwargs))


def build_discriminator(name: str, kwargs: dict[str, Any]) -> nn.Module:
    """Build an untrained discriminator of architecture ``name`` from its config keyword arguments."""
    arch = architecture(name)
    return arch.discriminator(arch.config(**kwargs))
