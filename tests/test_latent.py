"""Latent helpers: the seed convention, seed parsing, truncation, class vectors, number checks."""

import math

import numpy as np
import pytest
import torch

from studio.latent import (
    check_finite,
    check_number,
    check_seed,
    class_vector,
    lerp,
    parse_seeds,
    path_times,
    pca_directions,
    seed_latents,
    sefa_directions,
    slerp,
    truncate,
)


def test_seed_means_numpy_randomstate_randn() -> None:
    z = seed_latents([5, 0], 100)
    assert z.dtype == torch.float32 and z.shape == (2, 100)
    assert np.allclose(z[0].numpy(), np.random.RandomState(5).randn(100).astype(np.float32))
    assert np.allclose(z[1].numpy(), np.random.RandomState(0).randn(100).astype(np.float32))


def test_seed_latent_does_not_depend_on_its_neighbours() -> None:
    alone = seed_latents([42], 10)
    batch = seed_latents(list(range(40, 50)), 10)
    assert torch.equal(alone[0], batch[2])


@pytest.mark.parametrize(
    ("text", "seeds"),
    [("0-7", list(range(8))), ("1,5,9", [1, 5, 9]), ("0-2,10, 12-13", [0, 1, 2, 10, 12, 13]), ("7", [7])],
)
def test_parse_seeds(text: str, seeds: list[int]) -> None:
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize(
    ("text", "message"),
    [("5-2", "end is below the start"), ("a-3", "bad seed"), ("1,x", "bad seed"), ("", "no seeds"),
     ("4294967296", "out of range"), ("-3", "bad seed"), ("0-20000", "too many seeds")],
)
def test_parse_seeds_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_seeds(text)


def test_truncation_limits() -> None:
    z = torch.randn(3, 8)
    assert torch.equal(truncate(z, 1.0), z)
    assert torch.equal(truncate(z, 0.0), torch.zeros_like(z))
    assert torch.allclose(truncate(z, 0.5), z / 2)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 1.6, -0.01, None, "0.5", True])
def test_truncation_refuses_what_is_not_a_finite_psi_in_range(bad: object) -> None:
    with pytest.raises(ValueError, match=r"truncation \(psi\) must be a finite number from 0 to 1.5, not "):
        truncate(torch.randn(2, 4), bad)


def test_check_number_keeps_finite_numbers_in_range_as_floats() -> None:
    assert check_number(np.float32(0.5), "x", 0, 1) == 0.5 and type(check_number(1, "x", 0, 1)) is float
    with pytest.raises(ValueError, match="x must be a finite number from -1 to 1, not nan"):
        check_number(math.nan, "x", -1, 1)


@pytest.mark.parametrize("bad", [math.nan, math.inf, 2.5, None, "7", True])
def test_seeds_must_be_whole_numbers(bad: object) -> None:
    with pytest.raises(ValueError, match="is not a whole number: seeds run from 0 to 4294967295"):
        check_seed(bad)
    assert check_seed(7.0) == 7 and check_seed(np.uint32(9)) == 9


def test_class_vectors_refuse_weights_that_are_not_finite() -> None:
    for bad in (math.nan, math.inf, 1001.0):
        with pytest.raises(ValueError, match="the weight of class 'b' must be a finite number from 0 to 1000"):
            class_vector({"a": 1.0, "b": bad}, ("a", "b"))


def test_check_finite_names_what_holds_nan() -> None:
    check_finite(torch.zeros(2, 3), "latents")
    with pytest.raises(ValueError, match="latents must be finite numbers: these hold NaN or infinity"):
        check_finite(torch.tensor([0.0, math.inf]), "latents")


def test_class_vector_one_hot_blend_and_errors() -> None:
    names = ("a", "b", "c", "d")
    assert torch.equal(class_vector("c", names), torch.tensor([0.0, 0.0, 1.0, 0.0]))
    assert torch.allclose(class_vector({"b": 3, "d": 2}, names), torch.tensor([0.0, 0.6, 0.0, 0.4]))
    assert torch.allclose(class_vector(None, names), torch.full((4,), 0.25))
    assert class_vector(None, ()).numel() == 0
    with pytest.raises(ValueError, match="unknown class 'e'"):
        class_vector("e", names)
    with pytest.raises(ValueError, match="sum to zero"):
        class_vector({"a": 0}, names)
    with pytest.raises(ValueError, match=r"weight of class 'a' must be a finite number from 0 to 1000, not -1"):
        class_vector({"a": -1, "b": 2}, names)


def test_sefa_directions_are_orthonormal_and_ordered_by_gain() -> None:
    torch.manual_seed(0)
    weight = torch.randn(12, 40)
    d = sefa_directions(weight, 5)
    assert d.shape == (5, 12)
    assert torch.allclose(d @ d.T, torch.eye(5), atol=1e-5)
    gains = (d @ weight).norm(dim=1)  # how far the first layer's output moves per unit step
    assert torch.all(gains[:-1] >= gains[1:] - 1e-5)
    # No unit vector moves the layer further than the first direction does.
    assert (torch.nn.functional.normalize(torch.randn(200, 12), dim=1) @ weight).norm(dim=1).max() <= gains[0] + 1e-4


def test_pca_directions_recover_the_dominant_latent_axis() -> None:
    torch.manual_seed(0)
    z = torch.randn(500, 6)
    mix = torch.randn(6, 30) * 0.05
    mix[2] *= 60  # features vary mostly along latent axis 2, then axis 4
    mix[4] *= 20
    d = pca_directions(z, z @ mix, 3)
    assert torch.allclose(d @ d.T, torch.eye(3), atol=1e-5)
    assert d[0].abs().argmax() == 2 and d[0].abs().max() > 0.95
    assert d[1].abs().argmax() == 4


def test_slerp_and_lerp_endpoints_and_norm() -> None:
    torch.manual_seed(0)
    a, b = torch.randn(64), torch.randn(64)
    for f in (lerp, slerp):
        assert torch.allclose(f(a, b, 0.0), a, atol=1e-6) and torch.allclose(f(a, b, 1.0), b, atol=1e-5)
    # Mid-way, lerp shrinks a Gaussian latent towards the mean; slerp keeps its norm between the ends.
    lo, hi = sorted([a.norm().item(), b.norm().item()])
    assert lo - 1e-4 <= slerp(a, b, 0.5).norm() <= hi + 1e-4
    assert lerp(a, b, 0.5).norm() < lo
    assert torch.allclose(slerp(a, 2 * a, 0.5), 1.5 * a, atol=1e-5)  # parallel: falls back to lerp


def test_path_times_counts_and_easing() -> None:
    times = path_times(3, 4, loop=False)
    assert len(times) == 8 and times[0] == (0, 0.0) and times[4] == (1, 0.0)
    assert [t for _, t in times[:4]] == [0.0, 0.25, 0.5, 0.75]  # the end keyframe is excluded
    looped = path_times(3, 4, loop=True)
    assert len(looped) == 12 and looped[-1][0] == 2  # last segment returns to the first keyframe
    eased = [t for _, t in path_times(2, 4, loop=False, easing="ease-in-out")]
    assert eased[0] == 0.0 and eased[1] < 0.25 and abs(eased[2] - 0.5) < 1e-9
    with pytest.raises(ValueError, match="at least 2 keyframes"):
        path_times(1, 4, loop=False)
