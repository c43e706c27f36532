"""Generation: pixel convention, seed determinism across batches, truncation on the real model."""

import numpy as np
import pytest
import torch

from studio import engine, zoo
from studio.media import to_uint8


def test_pixel_convention() -> None:
    x = torch.tensor([-1.5, -1.0, -0.5, 0.0, 0.003, 0.5, 1.0, 2.0]).view(1, 1, 1, 8).expand(1, 3, 1, 8)
    out = to_uint8(x)
    assert out.dtype == np.uint8 and out.shape == (1, 1, 8, 3)
    # clamp(round((x + 1) * 127.5), 0, 255)
    assert out[0, 0, :, 0].tolist() == [0, 0, 64, 128, 128, 191, 255, 255]


@pytest.mark.slow
def test_seed_gives_the_same_pixels_alone_or_in_a_batch_of_64(eyes: zoo.LoadedModel) -> None:
    batch = engine.generate_unbatched(eyes, range(100, 164), "hazel")
    for i in (0, 17, 63):
        alone = engine.generate_unbatched(eyes, [100 + i], "hazel")
        assert np.array_equal(alone[0], batch[i])
    assert len({img.tobytes() for img in batch}) == 64  # and different seeds differ


def test_truncation_zero_gives_the_mean_image_for_every_seed(tiny: str) -> None:
    model = zoo.load(tiny)
    mean = engine.generate_unbatched(model, [1, 2, 3], "dog", truncation=0.0)
    assert np.array_equal(mean[0], mean[1]) and np.array_equal(mean[1], mean[2])
    full = engine.generate_unbatched(model, [1, 2], "dog", truncation=1.0)
    assert not np.array_equal(full[0], full[1])
    half = engine.generate_unbatched(model, [1], "dog", truncation=0.5)
    assert not np.array_equal(half[0], full[0]) and not np.array_equal(half[0], mean[0])


def test_class_changes_the_image_and_unknown_class_is_refused(tiny: str) -> None:
    model = zoo.load(tiny)
    cat, dog = engine.generate_unbatched(model, [7], "cat"), engine.generate_unbatched(model, [7], "dog")
    assert not np.array_equal(cat, dog)
    with pytest.raises(ValueError, match="unknown class 'owl'"):
        engine.generate_unbatched(model, [7], "owl")
