"""Requests -> generator inputs: seeded latents, slider strips, and the numbers a request refuses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from studio import directions, latent, zoo
from studio.engine import Engine
from studio.sampling import Inputs, Request, edit_offset, request_inputs, strip_inputs

VALUES = (-3.0, 1.5, 3.0)  # the middle one is slider 0's value in EDITED


def pair(inputs: Inputs) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A DCGAN's inputs as (z, class vectors)."""
    assert inputs.noise_seeds is None  # a DCGAN has no noise inputs
    return inputs.latents, inputs.c


def edited(model: str) -> Request:
    """One image with slider 0 at 1.5 and slider 2 at -1, the other sliders at 0."""
    return Request(model, (5,), "dog", 0.8, ((0, 1.5), (2, -1.0)))


def test_a_seed_gives_the_same_latent_alone_or_in_a_batch(tiny: str) -> None:
    model = zoo.load(tiny)
    batch, c = pair(request_inputs(model, Request(tiny, (3, 9, 4), "cat", 0.7)))
    alone, _ = pair(request_inputs(model, Request(tiny, (9,), "cat", 0.7)))
    again, _ = pair(request_inputs(model, Request(tiny, (3, 9, 4), "cat", 0.7)))
    assert batch.shape == (3, 16) and torch.equal(alone[0], batch[1]) and torch.equal(again, batch)
    assert torch.equal(batch, 0.7 * latent.seed_latents([3, 9, 4], 16))  # truncation towards the zero mean
    assert not torch.equal(batch[0], batch[2])
    assert c.shape == (3, 3) and torch.equal(c[0], torch.tensor([1.0, 0.0, 0.0]))


def test_edits_move_the_latent_along_their_directions(tiny: str) -> None:
    model = zoo.load(tiny)
    plain, _ = pair(request_inputs(model, Request(tiny, (5,), "dog", 0.8)))
    z, _ = pair(request_inputs(model, edited(tiny)))
    dirs = directions.load_or_compute(model, "sefa")
    assert torch.allclose(z[0] - plain[0], 1.5 * dirs[0] - 1.0 * dirs[2], atol=1e-6)
    assert torch.equal(edit_offset(model, ((0, 1.5), (2, -1.0)), "sefa"), 1.5 * dirs[0] + -1.0 * dirs[2])


def test_strip_inputs_move_one_slider_at_a_time(tiny: str) -> None:
    model = zoo.load(tiny)
    request = edited(tiny)
    own, own_c = pair(request_inputs(model, request))
    dirs = directions.load_or_compute(model, "sefa")
    z, c = pair(strip_inputs(model, request, 3, VALUES))
    assert z.shape == (3 * len(VALUES), 16) and c.shape == (len(z), 3)
    assert all(torch.equal(row, own_c[0]) for row in c)
    strips = z.view(3, len(VALUES), 16)
    assert torch.equal(strips[0, 1], own[0])  # slider 0 at its own value: the request's latent exactly
    for i, current in enumerate((1.5, 0.0, -1.0)):
        for j, value in enumerate(VALUES):
            assert torch.allclose(strips[i, j] - own[0], (value - current) * dirs[i], atol=1e-5), (i, j)
    # Along the other directions a strip's latent stays where the request put it.
    others = [d for d in range(len(dirs)) if d != 1]
    assert torch.allclose(dirs[others] @ (strips[1] - own[0]).T, torch.zeros(len(others), len(VALUES)), atol=1e-5)


def test_strip_inputs_draw_the_requests_own_image_at_its_own_values(tiny: str) -> None:
    request = edited(tiny)
    with Engine("cpu") as engine:
        z, c = pair(strip_inputs(engine.model(tiny), request, 1, VALUES))
        strip = engine.generate(Request(tiny, z=z, c=c))
        assert np.array_equal(strip[1], engine.generate(request)[0])
        assert not np.array_equal(strip[0], strip[1])


def test_strips_stop_at_the_models_directions(tiny: str) -> None:
    model = zoo.load(tiny)
    available = len(directions.load_or_compute(model, "pca"))
    z, c = pair(strip_inputs(model, Request(tiny, (1,), "cat", directions="pca"), available + 5, (0.0, 1.0)))
    assert len(z) == 2 * available and len(c) == len(z)
    with pytest.raises(ValueError, match="^slider strips are drawn around one image, not 2$"):
        strip_inputs(model, Request(tiny, (1, 2)), 1, VALUES)


def test_out_of_range_numbers_are_refused_in_words(tiny: str) -> None:
    with pytest.raises(ValueError, match=r"^slider 0 must be a finite number from -5 to 5, not 6\.0$"):
        Request(tiny, (1,), edits=((0, 6.0),))
    with pytest.raises(ValueError, match=r"^slider numbers are whole numbers from 0, not -1$"):
        Request(tiny, (1,), edits=((-1, 1.0),))
    with pytest.raises(ValueError, match=r"^truncation \(psi\) must be a finite number from 0 to "):
        Request(tiny, (1,), truncation=float("nan"))
    model = zoo.load(tiny)
    count = len(directions.load_or_compute(model, "sefa"))
    with pytest.raises(ValueError, match=rf"^direction 99 does not exist: there are {count} \(0-{count - 1}\)$"):
        request_inputs(model, Request(tiny, (1,), edits=((99, 1.0),)))


def test_explicit_latents_must_fit_the_model(tiny: str) -> None:
    model = zoo.load(tiny)
    with pytest.raises(ValueError, match=r"^latents must be \[N, 16\] for model 'tiny', not \[2, 5\]$"):
        request_inputs(model, Request(tiny, z=torch.zeros(2, 5), c=torch.eye(3)[:2]))
    with pytest.raises(ValueError, match=r"^model 'tiny' needs class vectors \[N, 3\] with its latents$"):
        request_inputs(model, Request(tiny, z=torch.zeros(2, 16)))
    z, c = pair(request_inputs(model, Request(tiny, z=torch.ones(2, 16, dtype=torch.float64), c=torch.eye(3)[:2])))
    assert z.dtype == torch.float32 and torch.equal(c, torch.eye(3)[:2])
