"""Network bending from Explore's "Bend the network" panel, in a real Chromium."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Page

from studio import recipe
from studio.bending import Bend
from studio.engine import Engine
from tests.conftest import shown_pixels
from tests.test_browser import page, wait_for_shown  # noqa: F401 (page: the fixture)

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def test_adding_a_bend_draws_it_and_clearing_it_draws_the_image_again(page: Page, eyes_engine: Engine) -> None:
    before = shown_pixels(page)
    page.click("#bend-panel button")  # open the accordion
    page.locator("#bend-layer input").fill("2")
    page.locator("#bend-value input").fill("90")
    page.click("#add-bend")
    bent = wait_for_shown(page, lambda r: r.bends == (Bend(2, "rotate", 90.0),))
    assert page.locator("#bends textarea").input_value() == "2:rotate=90"
    page.click("#clear-bends")
    wait_for_shown(page, lambda r: r.bends == ())
    after = shown_pixels(page)
    made = recipe.read_recipe(bent)
    expected = eyes_engine.generate(recipe.request_for(made))[0]
    shown = np.asarray(recipe_image(bent))
    np.testing.assert_array_equal(shown, expected)  # the PNG's recipe replays to its pixels
    assert not np.array_equal(shown, before)
    np.testing.assert_array_equal(after, before)


def recipe_image(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")
