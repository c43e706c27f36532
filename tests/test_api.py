"""The studio's API through the real gradio_client, against the launched app: the recipe is the API."""

import json
from concurrent.futures import ThreadPoolExecutor
from threading import Barrier

import numpy as np
import pytest
from gradio_client import Client
from PIL import Image

from studio.engine import Engine, Request
from studio.recipe import Recipe, read_recipe

pytestmark = pytest.mark.slow


def recipe_json(seed: int, classes: dict, truncation: float = 1.0, edits: dict | None = None) -> str:
    return Recipe("omniart-eyes", "", seed, classes, truncation, "sefa", edits or {}).to_json()


def pixels(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_draw_returns_the_recipes_image_carrying_the_recipe(studio_url: str, eyes_engine: Engine) -> None:
    client = Client(studio_url, verbose=False)
    image_path, full_recipe = client.predict(recipe_json(11, {"green": 1.0}, 0.9, {0: 2.5, 3: -1.0}),
                                             api_name="/draw")
    expected = eyes_engine.generate(Request("omniart-eyes", (11,), {"green": 1.0}, 0.9, ((0, 2.5), (3, -1.0))))
    assert pixels(image_path).shape == (128, 128, 3)
    assert np.array_equal(pixels(image_path), expected[0])  # PNG is lossless: the exact pixels
    embedded = read_recipe(open(image_path, "rb").read())
    assert embedded.seed == 11 and embedded.edits == {0: 2.5, 3: -1.0}
    assert len(embedded.weights_sha256) == 64 and json.loads(full_recipe)["weights_sha256"] == embedded.weights_sha256


def test_bad_input_is_reported_in_words(studio_url: str) -> None:
    client = Client(studio_url, verbose=False)
    bad_model = Recipe("nope", "", 1).to_json()
    with pytest.raises(Exception, match="unknown model 'nope'; available: omniart-eyes"):
        client.predict(bad_model, api_name="/draw")
    with pytest.raises(Exception, match="unknown class 'purple'"):
        client.predict(recipe_json(1, {"purple": 1.0}), api_name="/draw")
    with pytest.raises(Exception, match="not a recipe"):
        client.predict("{}", api_name="/draw")
    wrong_weights = Recipe("omniart-eyes", "0" * 64, 1).to_json()
    with pytest.raises(Exception, match="other weights"):
        client.predict(wrong_weights, api_name="/draw")


def test_concurrent_clients_each_get_their_own_seed_batched_together(studio_url: str, eyes_engine: Engine) -> None:
    seeds = [300 + 17 * i for i in range(8)]
    before = Client(studio_url, verbose=False).predict(api_name="/engine_stats")[1]
    clients = [Client(studio_url, verbose=False) for _ in seeds]
    start = Barrier(len(seeds))  # every client sends at the same moment, as a busy studio sees them

    def call(client: Client, seed: int) -> np.ndarray:
        start.wait()
        path, _ = client.predict(recipe_json(seed, {"gray": 1.0}), api_name="/draw")
        return pixels(path)

    with ThreadPoolExecutor(len(seeds)) as pool:
        results = list(pool.map(call, clients, seeds))
    for seed, image in zip(seeds, results):
        expected = eyes_engine.generate(Request("omniart-eyes", (seed,), {"gray": 1.0}))[0]
        assert np.array_equal(image, expected), seed
    after = Client(studio_url, verbose=False).predict(api_name="/engine_stats")[1]
    requests = after["requests"] - before["requests"]
    batches = after["batches"] - before["batches"]
    assert requests == len(seeds)
    assert batches < requests  # some requests shared a forward pass
