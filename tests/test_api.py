"""The studio's API through the real gradio_client, against the launched app."""

from concurrent.futures import ThreadPoolExecutor
from threading import Barrier

import numpy as np
import pytest
from gradio_client import Client
from PIL import Image

from studio.engine import Engine, Request

pytestmark = pytest.mark.slow


def test_render_returns_the_seeds_image_and_its_neighbours(studio_url: str, eyes_engine: Engine) -> None:
    client = Client(studio_url, verbose=False)
    image_path, gallery = client.predict("omniart-eyes", 11, "green", 0.9, api_name="/render")
    image = np.asarray(Image.open(image_path).convert("RGB"))
    expected = eyes_engine.generate(Request("omniart-eyes", tuple(range(11, 20)), "green", 0.9))
    assert image.shape == (128, 128, 3)
    assert np.array_equal(image, expected[0])  # PNG is lossless: the exact pixels
    assert [item["caption"] for item in gallery] == [f"seed {s}" for s in range(12, 20)]
    first_variation = np.asarray(Image.open(gallery[0]["image"]).convert("RGB"))
    assert np.array_equal(first_variation, expected[1])


def test_bad_input_is_reported_in_words(studio_url: str) -> None:
    client = Client(studio_url, verbose=False)
    with pytest.raises(Exception, match="unknown model 'nope'; available: omniart-eyes"):
        client.predict("nope", 1, None, 1.0, api_name="/render")
    with pytest.raises(Exception, match="unknown class 'purple'"):
        client.predict("omniart-eyes", 1, "purple", 1.0, api_name="/render")


def test_concurrent_clients_each_get_their_own_seed_batched_together(studio_url: str, eyes_engine: Engine) -> None:
    seeds = [300 + 17 * i for i in range(8)]
    before = Client(studio_url, verbose=False).predict(api_name="/engine_stats")[1]

    clients = [Client(studio_url, verbose=False) for _ in seeds]
    start = Barrier(len(seeds))  # every client sends at the same moment, as a busy studio sees them

    def call(client: Client, seed: int) -> np.ndarray:
        start.wait()
        path, _ = client.predict("omniart-eyes", seed, "gray", 1.0, api_name="/render")
        return np.asarray(Image.open(path).convert("RGB"))

    with ThreadPoolExecutor(len(seeds)) as pool:
        results = list(pool.map(call, clients, seeds))
    for seed, image in zip(seeds, results):
        expected = eyes_engine.generate(Request("omniart-eyes", (seed,), "gray", 1.0))[0]
        assert np.array_equal(image, expected), seed
    after = Client(studio_url, verbose=False).predict(api_name="/engine_stats")[1]
    requests = after["requests"] - before["requests"]
    batches = after["batches"] - before["batches"]
    assert requests == len(seeds)
    assert batches < requests  # some requests shared a forward pass
