"""Fused modulated convolution (per-sample weights, one grouped convolution): the unfused path's images within fp32
rounding, and a seed's image independent of the batch it is drawn in."""

from __future__ import annotations

import numpy as np
import torch

from studio.media import to_uint8
from studio.models.stylegan2 import StyleGAN2Generator
from tests.test_stylegan2 import tiny


def generator() -> StyleGAN2Generator:
    torch.manual_seed(0)
    g = StyleGAN2Generator(tiny(resolution=16, conv_clamp=256.0)).eval()
    for layer in g.synthesis.modules():  # visible noise, so the noise path is compared too
        if hasattr(layer, "noise_strength"):
            layer.noise_strength.data.fill_(0.3)
    return g


@torch.inference_mode()
def test_fused_draws_the_unfused_images_within_fp32_rounding() -> None:
    g = generator()
    ws = g.styles(torch.randn(5, g.config.z_dim, generator=torch.Generator().manual_seed(1)), None)
    for n in (1, 5):  # a lone image (a plain convolution) and a batch (grouped)
        unfused = g.fuse(False).draw(ws[:n], noise_seeds=[3] * n)
        fused = g.fuse(True).draw(ws[:n], noise_seeds=[3] * n)
        assert unfused.abs().max() > 0.1
        torch.testing.assert_close(fused, unfused, rtol=0, atol=1e-4)
    assert all(layer.fused for layer in g.synthesis.modules() if hasattr(layer, "fused"))


@torch.inference_mode()
def test_fused_images_do_not_depend_on_the_batch() -> None:
    g = generator().fuse()
    ws = g.styles(torch.randn(6, g.config.z_dim, generator=torch.Generator().manual_seed(2)), None)
    together = to_uint8(g.draw(ws))
    in_pairs = np.concatenate([to_uint8(g.draw(ws[i : i + 2])) for i in range(0, 6, 2)])
    reversed_batch = to_uint8(g.draw(ws.flip(0)))[::-1]
    np.testing.assert_array_equal(in_pairs, together)
    np.testing.assert_array_equal(reversed_batch, together)
    alone = np.concatenate([to_uint8(g.draw(ws[i : i + 1])) for i in range(6)])
    assert np.abs(alone.astype(int) - together).max() <= 1  # a plain convolution's rounding, at most a level
