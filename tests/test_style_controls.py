"""StyleGAN2 in every tab: truncation in W, style mixing, noise seeds, slider edits on layer ranges, W paths.

Each expectation is computed here from the generator's two halves (``mapping`` and ``synthesis``)
called directly, not through the studio's request path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from studio import animation, directions, latent, recipe, zoo
from studio.engine import Engine, to_uint8
from studio.models.folder import ModelConfig, save_pretrained
from studio.models.stylegan2 import StyleGAN2Generator
from studio.sampling import Request, request_inputs, strip_inputs
from tests.test_stylegan2 import randomized, tiny

CLASSES = ("ink", "rust")


def save_style_model(home: Path, name: str = "sg", num_classes: int = 2) -> StyleGAN2Generator:
    """A tiny randomised StyleGAN2 (16 px, 6 style layers) saved as model ``name``; returns its generator."""
    config = ModelConfig("stylegan2", tiny(num_classes=num_classes), class_names=CLASSES[:num_classes])
    g = randomized(StyleGAN2Generator(config.arch), seed=3)
    save_pretrained(home / "models" / name, config, g)
    return g


@pytest.fixture
def sg(home: Path) -> StyleGAN2Generator:
    """The saved generator, in the memory layout the engine draws in (``engine.prepare``), so pixels agree
    to the bit."""
    return save_style_model(home).to(memory_format=torch.channels_last)


def mapped(g: StyleGAN2Generator, seeds: list[int], cls: int = 0) -> torch.Tensor:
    """Untruncated w ``[N, w_dim]`` of ``seeds`` with one-hot class ``cls``, straight from the mapping MLP."""
    z = latent.seed_latents(seeds, g.config.z_dim)
    with torch.no_grad():
        return g.mapping.w(z, torch.eye(g.config.num_classes)[[cls] * len(seeds)])


def drawn(g: StyleGAN2Generator, ws: torch.Tensor, **kwargs) -> np.ndarray:
    with torch.no_grad():
        return to_uint8(g.synthesis(ws, **kwargs))


def test_truncation_pulls_w_toward_w_avg_and_zero_gives_the_mean_image(sg: StyleGAN2Generator) -> None:
    model = zoo.load("sg")
    ws = request_inputs(model, Request("sg", (1, 2), "ink", 0.6)).latents
    expected = sg.mapping.w_avg + 0.6 * (mapped(sg, [1, 2]) - sg.mapping.w_avg)
    torch.testing.assert_close(ws, expected[:, None].expand(-1, 6, -1), atol=1e-6, rtol=0)
    with Engine("cpu") as engine:
        mean = engine.generate(Request("sg", (1, 2, 3), "ink", 0.0))
        untruncated = engine.generate(Request("sg", (4,), "ink"))
    assert (mean == mean[0]).all()  # psi 0: every seed is the average style
    np.testing.assert_array_equal(mean[0], drawn(sg, sg.mapping.w_avg.expand(1, 6, -1))[0])
    # psi 1 is the network as its own code runs it: mapping then synthesis with the stored noise.
    with torch.no_grad():
        own = to_uint8(sg(latent.seed_latents([4], 6), torch.eye(2)[[0]]))
    np.testing.assert_array_equal(untruncated, own)


def test_style_mixing_takes_a_layer_range_from_the_second_seed(sg: StyleGAN2Generator) -> None:
    with Engine("cpu") as engine:
        mixed = engine.generate(Request("sg", (1,), "ink", 0.8, mix=(5, 2, 3)))
        everything = engine.generate(Request("sg", (1,), "ink", 0.8, mix=(5, 0, 5)))
        seed5 = engine.generate(Request("sg", (5,), "ink", 0.8))
        plain = engine.generate(Request("sg", (1,), "ink", 0.8))
    w_avg = sg.mapping.w_avg
    own, other = (w_avg + 0.8 * (mapped(sg, [s]) - w_avg) for s in (1, 5))
    ws = own[:, None].repeat(1, 6, 1)
    ws[:, 2:4] = other[:, None]
    np.testing.assert_array_equal(mixed, drawn(sg, ws))
    np.testing.assert_array_equal(everything, seed5)  # all layers from seed 5 is seed 5's image
    assert not np.array_equal(mixed, plain) and not np.array_equal(mixed, seed5)


def test_noise_seeds_reroll_the_detail_reproducibly_and_batch_invariantly(sg: StyleGAN2Generator) -> None:
    with Engine("cpu", max_wait_ms=50) as engine:
        const = engine.generate(Request("sg", (1,), "ink"))
        first = engine.generate(Request("sg", (1,), "ink", noise_seed=7))
        again = engine.generate(Request("sg", (1,), "ink", noise_seed=7))
        other = engine.generate(Request("sg", (1,), "ink", noise_seed=8))
        together = [engine.submit(Request("sg", (1,), "ink", noise_seed=7)), engine.submit(Request("sg", (1,), "ink"))]
        batched = [f.result() for f in together]
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, const) and not np.array_equal(first, other)
    np.testing.assert_array_equal(batched[0], first)  # the same noise beside a constant-noise image
    np.testing.assert_array_equal(batched[1], const)
    # The noise is the seed's own Gaussian maps, layer by layer from coarse to fine, drawn on the CPU.
    gen = torch.Generator().manual_seed(7)
    maps = [torch.randn(side, side, generator=gen)[None, None] for side in (4, 8, 8, 16, 16)]
    ws = mapped(sg, [1])[:, None].expand(1, 6, -1)
    x = img = None
    with torch.no_grad():
        for block, noise, start in zip(sg.synthesis.blocks(), (maps[:1], maps[1:3], maps[3:]), (0, 1, 3)):
            x, img = block(x, img, ws[:, start : start + len(noise) + 1], "none", noise)
    np.testing.assert_array_equal(first, to_uint8(img))
