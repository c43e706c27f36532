"""Metrics: multi-scale sliced Wasserstein distance and the memorization guard, on synthetic image sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from studio.metrics import (
    NEAR_COPY_THRESHOLD,
    laplacian_pyramid,
    memorization,
    nearest_neighbours,
    pyramid_sizes,
    sliced_wasserstein,
    swd,
)

FAST = {"patches_per_image": 64, "directions": 128}  # enough for clear margins, a fraction of a second


def gradients(n: int, size: int, seed: int) -> torch.Tensor:
    """Smooth images: a random colour ramp in a random direction, ``[n, 3, size, size]`` in [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.linspace(-1, 1, size)
    angle = torch.rand(n, 1, 1, 1, generator=gen) * 2 * torch.pi
    ramp = angle.cos() * t.view(1, 1, 1, -1) + angle.sin() * t.view(1, 1, -1, 1)  # [n, 1, size, size]
    colour = torch.rand(n, 3, 1, 1, generator=gen) * 2 - 1
    return (colour * ramp * 0.7 + 0.2 * colour).clamp(-1, 1)


def noise(n: int, size: int, seed: int) -> torch.Tensor:
    """Uniform noise images ``[n, 3, size, size]`` in [-1, 1]."""
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def textured(n: int, size: int, seed: int) -> torch.Tensor:
    """Gradients with fine grain on top, so every pyramid level carries some energy."""
    grain = 0.15 * torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed + 1000))
    return (gradients(n, size, seed) + grain).clamp(-1, 1)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """``[N, 3, H, W]`` in [-1, 1] -> ``[N, H, W, 3]`` uint8, the engine's format."""
    return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- SWD ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "levels"), [(32, [32, 16]), (64, [64, 32, 16]), (128, [128, 64, 32, 16]),
                                              (100, [100, 50, 25]), (16, [16])])
def test_levels_follow_the_pyramid(size: int, levels: list[int]) -> None:
    assert [min(s) for s in pyramid_sizes(size, size)] == levels
    x = noise(3, size, 0)
    assert [tuple(level.shape[-2:]) for level in laplacian_pyramid(x)] == pyramid_sizes(size, size)
    result = swd(x, noise(3, size, 1), generator=seeded(), patches_per_image=8, directions=16)
    assert list(result.levels) == levels
    assert result.mean == pytest.approx(sum(result.levels.values()) / len(levels))


def test_images_under_16_pixels_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 16x16"):
        swd(noise(2, 15, 0), noise(2, 15, 1))


def test_pyramid_of_a_flat_image_has_empty_bands() -> None:
    # The upsampling must keep brightness (gain 4 on a zero-filled grid) up to the mirrored borders,
    # or a flat image would show structure in its band-pass levels; odd sizes included.
    for size in (64, 45):
        levels = laplacian_pyramid(torch.full((1, 3, size, size), 0.3))
        assert all(band.abs().max() < 1e-6 for band in levels[:-1])
        assert torch.allclose(levels[-1], torch.tensor(0.3))


def test_sliced_wasserstein_pairs_sorted_values() -> None:
    a = torch.arange(100.0)[:, None]  # [M, 1]: every direction is +-1, so the SWD is the 1-D W1 exactly
    b = (a + 3)[torch.randperm(100, generator=seeded())]  # shuffled: pairing by index would be wrong
    assert sliced_wasserstein(a, b, 8, seeded()) == pytest.approx(3.0)
    points = torch.randn(500, 20, generator=seeded())
    assert sliced_wasserstein(points, points.flip(0), 64, seeded()) == pytest.approx(0.0, abs=1e-6)


def test_a_set_is_close_to_itself_and_far_from_another_distribution() -> None:
    smooth, rough = gradients(32, 64, 0), noise(32, 64, 1)
    same = swd(smooth, smooth, generator=seeded(), **FAST)  # different patches drawn for each side
    other = swd(smooth, rough, generator=seeded(), **FAST)
    assert other.mean > 20 * same.mean
    assert all(other.levels[k] > 10 * same.levels[k] for k in same.levels)
    # Two independent sets of the same kind are close too (not just the very same images).
    fresh = swd(smooth, gradients(32, 64, 2), generator=seeded(), **FAST)
    assert other.mean > 5 * fresh.mean


def test_a_change_of_colour_statistics_counts() -> None:
    # Same structure, duller and darker palette: per-set normalisation would hide this entirely;
    # with pooled statistics it shows, above all at the coarsest (colour) level.
    x = gradients(32, 32, 0)
    same = swd(x, x, generator=seeded(), **FAST)
    dull = swd(x, x * 0.5 - 0.3, generator=seeded(), **FAST)
    assert dull.levels[16] > 10 * same.levels[16]
    assert dull.mean > 5 * same.mean


def test_swd_falls_as_one_set_is_blended_into_the_other() -> None:
    # Both ends carry energy at every level: normalisation makes a band's SWD blind to scale, so
    # blending noise into a set with (nearly) empty bands would leave those bands' SWD flat.
    target, start = textured(32, 32, 0), gradients(32, 32, 1) * 0.3 + 0.4  # pale, low-contrast, no grain
    means = [swd((1 - a) * start + a * target, target, generator=seeded(), **FAST).mean
             for a in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert all(later < 0.9 * earlier for earlier, later in zip(means, means[1:])), means


def test_swd_is_deterministic_given_the_generator_and_leaves_the_global_rng_alone() -> None:
    a, b = gradients(8, 32, 0), noise(8, 32, 1)
    state = torch.get_rng_state()
    first = swd(a, b, generator=seeded(7), **FAST)
    assert swd(a, b, generator=seeded(7), **FAST) == first
    assert swd(a, b, **FAST) == swd(a, b, **FAST)  # no generator: a fixed default seed
    assert swd(a, b, generator=seeded(8), **FAST) != first  # the generator really drives the draws
    assert torch.equal(torch.get_rng_state(), state)


def test_uint8_and_float_inputs_agree() -> None:
    x, y = to_uint8(gradients(8, 32, 0)), to_uint8(noise(8, 32, 1))
    as_float = lambda u: torch.from_numpy(u).permute(0, 3, 1, 2).float() / 127.5 - 1  # noqa: E731
    reference = swd(as_float(x), as_float(y), generator=seeded(), **FAST)
    for a, b in [(x, y), (torch.from_numpy(x), torch.from_numpy(y)), (x, as_float(y))]:
        result = swd(a, b, generator=seeded(), **FAST)
        assert result.levels == pytest.approx(reference.levels, rel=1e-4)
    # A numpy view with negative strides (a mirrored set) is accepted too.
    mirrored = swd(x[:, :, ::-1], y, generator=seeded(), **FAST)
    assert mirrored.mean == pytest.approx(swd(x[:, :, ::-1].copy(), y, generator=seeded(), **FAST).mean)


def test_sets_of_different_sizes() -> None:
    # Four copies of a set have the same distribution as the set: the larger side is subsampled to
    # the smaller's descriptor count, so the SWD stays at the same-distribution level.
    x = textured(10, 32, 0)
    options = {"patches_per_image": 256, "directions": 128}  # 10 images: more patches for a low floor
    same = swd(x, x.repeat(4, 1, 1, 1), generator=seeded(), **options)
    other = swd(x, noise(40, 32, 1), generator=seeded(), **options)
    assert same.mean < 1.3 * swd(x, x, generator=seeded(), **options).mean
    # The subsample spans the whole larger set: half noise shows, wherever it sits in the set.
    half = swd(x, torch.cat([x, noise(10, 32, 1)]), generator=seeded(), **options)
    assert half.mean > 3 * same.mean
    assert other.mean > 10 * same.mean
    assert swd(noise(40, 32, 1), x, generator=seeded(), **options).mean == pytest.approx(other.mean, rel=0.2)


def test_mismatched_sets_are_refused() -> None:
    with pytest.raises(ValueError, match="differ"):
        swd(noise(2, 32, 0), noise(2, 64, 0))
    with pytest.raises(ValueError, match="at least one image"):
        swd(noise(0, 32, 0), noise(2, 32, 0))


# --- Memorization ------------------------------------------------------------------------------------


@pytest.fixture
def dataset() -> np.ndarray:
    """40 images at 64px, uint8: half smooth, half noise."""
    return to_uint8(torch.cat([gradients(20, 64, 10), noise(20, 64, 11)]))


def test_exact_copies_are_found(dataset: np.ndarray) -> None:
    picks = np.array([3, 27, 0, 39, 3])
    indices, distances = nearest_neighbours(dataset[picks], dataset)
    assert indices.tolist() == picks.tolist()
    assert distances.max() < 1e-6


def test_noisy_copies_are_found_and_fresh_images_are_not_copies(dataset: np.ndarray) -> None:
    picks = np.arange(0, 40, 4)
    rng = np.random.default_rng(0)
    noisy = (dataset[picks] + rng.normal(0, 0.05 * 255, dataset[picks].shape)).clip(0, 255).astype(np.uint8)
    report = memorization(noisy, dataset)
    assert report.indices.tolist() == picks.tolist()
    assert report.distances.max() < NEAR_COPY_THRESHOLD and report.fraction == 1.0
    fresh = memorization(to_uint8(torch.cat([gradients(10, 64, 20), noise(10, 64, 21)])), dataset)
    assert fresh.distances.min() > NEAR_COPY_THRESHOLD and fresh.fraction == 0.0


def test_near_copy_fraction_and_threshold(dataset: np.ndarray) -> None:
    generated = np.concatenate([dataset[[5, 25, 9]], to_uint8(noise(7, 64, 30))])  # 3 copies, 7 fresh
    report = memorization(generated, dataset)
    assert report.fraction == pytest.approx(0.3)
    assert report.threshold == NEAR_COPY_THRESHOLD
    assert report.indices[:3].tolist() == [5, 25, 9]
    assert memorization(generated, dataset, threshold=1.0).fraction == 1.0  # the threshold is used
    assert memorization(generated, dataset, threshold=0.0).fraction == 0.0


def test_search_is_chunked_and_resolution_independent(dataset: np.ndarray) -> None:
    generated = np.concatenate([dataset[::-3], to_uint8(noise(5, 64, 40))])
    whole = nearest_neighbours(generated, dataset)
    pieces = nearest_neighbours(generated, dataset, chunk=3)
    assert torch.equal(whole[0], pieces[0]) and torch.allclose(whole[1], pieces[1])
    # Samples at 128px (the data set upscaled) against the 64px data set: both are reduced to 32x32.
    big = dataset[::-3].repeat(2, axis=1).repeat(2, axis=2)
    indices, distances = nearest_neighbours(torch.from_numpy(big).permute(0, 3, 1, 2) / 127.5 - 1, dataset)
    assert indices.tolist() == list(range(39, -1, -3)) and distances.max() < 1e-5


def test_empty_inputs_are_refused(dataset: np.ndarray) -> None:
    with pytest.raises(ValueError, match="empty"):
        nearest_neighbours(dataset[:2], dataset[:0])
    with pytest.raises(ValueError, match="no samples"):
        memorization(dataset[:0], dataset)


# --- Command line ------------------------------------------------------------------------------------


def test_metrics_command_prints_swd_and_near_copies(tiny: str, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from studio import data
    from studio.__main__ import main
    from studio.engine import Engine, Request

    with Engine() as engine:  # the data set: the very images the command will draw (seeds 0-7)
        own = engine.generate(Request(tiny, seeds=tuple(range(8))))
    monkeypatch.setattr(data, "load_dataset", lambda name: torch.from_numpy(own).permute(0, 3, 1, 2) / 127.5 - 1)
    assert main(["metrics", "--model", tiny, "--data", "own", "--samples", "8"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("SWD x1e3, 8 samples of tiny vs 8 images of own")
    assert [line.split()[0] for line in out[1:4]] == ["32px", "16px", "mean"]
    expected = swd(own, own, generator=seeded())
    assert float(out[3].split()[1]) == pytest.approx(expected.mean, abs=0.05)
    assert out[4].startswith("near-copies: 100.0% of samples")
    monkeypatch.setattr(data, "load_dataset", lambda name: noise(4, 64, 0))
    assert main(["metrics", "--model", tiny, "--data", "big", "--samples", "8"]) == 2
    assert "the data set is 64px but tiny draws 32px" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [(["--model", "nope", "--data", "x"], "unknown model 'nope'"),
                                               (["--model", "tiny", "--data", "nope"], "no data set named 'nope'"),
                                               (["--model", "tiny", "--data", "x", "--samples", "0"], "at least 1")])
def test_metrics_command_bad_input_exits_2(tiny: str, args: list[str], message: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from studio.__main__ import main

    assert main(["metrics", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
