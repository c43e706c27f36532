"""Latent helpers: the seed convention, seed parsing, truncation, class vectors."""

import numpy as np
import pytest
import torch

from studio.latent import class_vector, parse_seeds, seed_latents, truncate


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
    with pytest.raises(ValueError, match="negative"):
        class_vector({"a": -1, "b": 2}, names)
