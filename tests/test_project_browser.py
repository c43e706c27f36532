"""Explore's "Start from an image", in a real Chromium: drop a picture, project it, see the result become current."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import Page

from studio import recipe
from studio.engine import Engine
from tests.test_browser import page, wait_for_shown  # noqa: F401 (page: the fixture)

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def test_a_dropped_picture_is_projected_and_becomes_the_current_image(page: Page, eyes_engine: Engine,
                                                                      tmp_path: Path) -> None:
    picture = Image.new("RGB", (120, 90), (30, 50, 110))
    ImageDraw.Draw(picture).ellipse((25, 20, 95, 70), fill=(230, 220, 200))
    picture.save(tmp_path / "mine.jpg")
    page.click("#project-panel button")  # open the accordion
    page.locator("#project-target input[type=file]").set_input_files(str(tmp_path / "mine.jpg"))
    steps = page.locator("#project-steps input[type=number]")
    steps.fill("10")
    steps.press("Enter")
    page.wait_for_timeout(500)  # the upload settles before the click reads it
    page.click("#project")
    shown = wait_for_shown(page, lambda r: r.latent is not None, timeout_s=120)
    page.wait_for_selector("#project-status :text('Done')", timeout=30_000)
    made = recipe.read_recipe(shown)
    assert made.latent.shape == (100,) and made.truncation == 1.0
    expected = eyes_engine.generate(recipe.request_for(made))[0]
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(shown)).convert("RGB")), expected)
    # The projection is the current state: a slider moves it, and the found latent stays in the recipe.
    page.locator("#slider-0 input[type=number]").fill("2")
    page.locator("#slider-0 input[type=number]").press("Enter")
    moved = recipe.read_recipe(wait_for_shown(page, lambda r: r.edits.get(0) == 2.0))
    assert moved.latent == made.latent
