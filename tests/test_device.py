"""The studio on the device it would serve from (CUDA where present, else the CPU): plain tests that
``scripts/gpu_check.sh`` runs on a GPU machine and every run of the suite runs on the CPU."""

from __future__ import annotations

import numpy as np
import torch

from studio import zoo
from studio.engine import default_device, generate_unbatched, precision_of, prepare
from tests.test_stylegan2_fused import generator


def test_the_device_draws_the_cpu_images_in_exact_and_fast_precision(tiny: str) -> None:
    device = default_device()
    on_cpu = generate_unbatched(zoo.load(tiny, "cpu"), (1, 2, 3), "dog").astype(np.int16)
    model = prepare(zoo.load(tiny, device))
    exact = generate_unbatched(model, (1, 2, 3), "dog").astype(np.int16)
    fast = generate_unbatched(model, (1, 2, 3), "dog", dtype=precision_of(model).dtype).astype(np.int16)
    assert np.abs(exact - on_cpu).max() <= 1  # another device's convolutions round differently, by a level at most
    assert np.abs(fast - on_cpu).max() <= 4


@torch.inference_mode()
def test_fused_stylegan2_on_the_device_matches_the_cpu() -> None:
    g = generator()
    ws = g.styles(torch.randn(4, g.config.z_dim, generator=torch.Generator().manual_seed(3)), None)
    expected = g.draw(ws)
    on_device = g.to(default_device()).fuse().draw(ws.to(default_device())).cpu()
    torch.testing.assert_close(on_device, expected, rtol=0, atol=1e-3)
