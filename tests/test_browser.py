"""The studio in a real Chromium (Debian's package) driven by Playwright, as an artist uses it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from playwright.sync_api import Page, sync_playwright

from studio.engine import Engine, Request
from studio.recipe import Recipe, RecipeError, read_recipe
from studio.ui.explore import DEFAULT_SEED, DEFAULT_TRUNCATION
from tests.conftest import (
    MAIN_IMG, current_src, launch_chromium, noise_artworks, set_seed, shown_bytes, shown_pixels, start_long_fine_tune,
    wait_for_new_image,
)

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture
def page(studio_url: str) -> Iterator[Page]:
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(studio_url)
        page.wait_for_selector(MAIN_IMG, timeout=90_000)
        yield page
        browser.close()


def wait_for_shown(page: Page, wanted: Callable[[Recipe], bool], timeout_s: float = 60) -> bytes:
    """Wait until the shown PNG's own recipe satisfies ``wanted`` (so no earlier redraw is mistaken for it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        data = shown_bytes(page)
        try:
            shown = read_recipe(data)
        except RecipeError:  # the src was replaced (and its file let go) between reading it and fetching it
            shown = None
        if shown is not None and wanted(shown):
            return data
        assert time.monotonic() < deadline, f"the page still shows {shown}"
        page.wait_for_timeout(200)


def test_first_load_shows_the_default_eye_large_and_crisp(page: Page, eyes_engine: Engine) -> None:
    expected = eyes_engine.generate(Request("omniart-eyes", (DEFAULT_SEED,), "amber", DEFAULT_TRUNCATION))[0]
    assert np.array_equal(shown_pixels(page), expected)
    box = page.locator(MAIN_IMG).bounding_box()
    assert box["width"] >= 3 * 128  # shown well above its 128 px
    assert page.eval_on_selector(MAIN_IMG, "img => getComputedStyle(img).imageRendering") == "pixelated"
    assert "128×128" in page.inner_text("body") and "MIT" in page.inner_text("body")


def test_changing_the_seed_changes_the_image(page: Page, eyes_engine: Engine) -> None:
    before = shown_pixels(page)
    set_seed(page, 123)
    after = shown_pixels(page)
    assert np.abs(after.astype(int) - before).mean() > 10  # a different picture, not a re-encode
    expected = eyes_engine.generate(Request("omniart-eyes", (123,), "amber", DEFAULT_TRUNCATION))[0]
    assert np.array_equal(after, expected)


def test_clicking_a_variation_makes_it_current(page: Page, eyes_engine: Engine) -> None:
    old_src = current_src(page)
    page.locator("#variations .thumbnail-item").nth(2).click()
    wait_for_new_image(page, old_src)
    assert page.input_value("#seed input") == str(DEFAULT_SEED + 3)
    expected = eyes_engine.generate(Request("omniart-eyes", (DEFAULT_SEED + 3,), "amber", DEFAULT_TRUNCATION))[0]
    assert np.array_equal(shown_pixels(page), expected)


def test_moving_a_slider_changes_the_picture(page: Page, eyes_engine: Engine) -> None:
    before, old_src = shown_pixels(page), current_src(page)
    box = page.locator("#slider-1 input[type=number]")
    box.fill("4")
    box.press("Enter")
    wait_for_new_image(page, old_src)
    after = shown_pixels(page)
    assert np.abs(after.astype(int) - before).mean() > 3
    expected = eyes_engine.generate(Request("omniart-eyes", (DEFAULT_SEED,), {"amber": 1.0}, DEFAULT_TRUNCATION,
                                            ((1, 4.0),)))[0]
    assert np.array_equal(after, expected)


def test_a_saved_pngs_recipe_restores_its_image(page: Page, tmp_path) -> None:
    page.fill("#seed input", "77")
    page.press("#seed input", "Enter")
    page.wait_for_function("() => document.querySelector('#seed input').value === '77'")
    box = page.locator("#slider-2 input[type=number]")
    box.fill("-3")
    box.press("Enter")
    saved = tmp_path / "saved.png"
    saved.write_bytes(wait_for_shown(page, lambda r: r.seed == 77 and r.edits == {2: -3.0}))
    wanted = shown_pixels(page)

    # Wander off: another seed.
    page.fill("#seed input", "5")
    page.press("#seed input", "Enter")
    wait_for_shown(page, lambda r: r.seed == 5)
    assert not np.array_equal(shown_pixels(page), wanted)

    page.get_by_text("Recipe: drop a PNG").click()
    page.set_input_files("#recipe-file input[type=file]", str(saved))
    wait_for_shown(page, lambda r: r.seed == 77 and r.edits == {2: -3.0})
    assert page.input_value("#seed input") == "77"
    assert page.input_value("#slider-2 input[type=number]") == "-3"
    assert np.array_equal(shown_pixels(page), wanted)


def test_back_and_forward_walk_the_history(page: Page, eyes_engine: Engine) -> None:
    def settle_on(value: str) -> None:
        set_seed(page, int(value))
        # Each state settles (its variations drawn) before the next one.
        page.wait_for_function(f"() => document.querySelector('#variations').innerText.includes('seed {int(value) + 1}')")

    settle_on("50")
    settle_on("60")
    for button, seed in (("#history-back", 50), ("#history-forward", 60)):
        old = current_src(page)
        page.click(button)
        wait_for_new_image(page, old)
        page.wait_for_function(f"() => document.querySelector('#seed input').value === '{seed}'")
        expected = eyes_engine.generate(Request("omniart-eyes", (seed,), {"amber": 1.0}, DEFAULT_TRUNCATION))[0]
        assert np.array_equal(shown_pixels(page), expected)


def test_a_change_made_before_the_first_context_is_drawn_is_still_in_the_history(page: Page) -> None:
    # No wait for the variations: the seed changes while the first page's context may still be drawing.
    set_seed(page, 70)
    old = current_src(page)
    page.click("#history-back")
    wait_for_new_image(page, old)
    page.wait_for_function(f"() => document.querySelector('#seed input').value === '{DEFAULT_SEED}'")


def test_two_visitors_opening_the_studio_at_once_get_every_picture_whole(studio_url: str) -> None:
    # Both are shown the same first variations and strips at the same moment: none may arrive truncated.
    with sync_playwright() as p:
        browser = launch_chromium(p)
        pages = [browser.new_context().new_page() for _ in range(2)]
        for visitor in pages:
            visitor.goto(studio_url, wait_until="commit")
        for visitor in pages:
            visitor.wait_for_selector("#variations img", timeout=90_000)
            visitor.wait_for_selector("#slider-strip-7 img", timeout=90_000)
            visitor.wait_for_function("() => [...document.querySelectorAll('#variations img, .strip img')]"
                                      ".every(img => img.complete)")
            sizes = visitor.eval_on_selector_all("#variations img, .strip img", "imgs => imgs.map(i => i.naturalWidth)")
            assert len(sizes) == 8 + 8 and min(sizes) > 0, sizes
        browser.close()


def test_a_fine_tune_from_upload_to_live_previews_to_cancel(page: Page, tmp_path) -> None:
    page.get_by_role("tab", name="Fine-tune").click()
    start_long_fine_tune(page, noise_artworks(tmp_path), "noise-prints", "noise-eyes")
    page.wait_for_selector("#ft-now img", timeout=60_000)
    first_preview = page.get_attribute("#ft-now img", "src")
    page.wait_for_function(f"() => document.querySelector('#ft-now img')?.getAttribute('src') !== {first_preview!r}",
                           timeout=60_000)  # the live grid refreshes as the model learns
    step = lambda: int(page.inner_text("#ft-progress").split("step ")[1].split(" ")[0])  # noqa: E731
    seen = step()
    page.wait_for_function(f"() => /step (\\d+)/.exec(document.querySelector('#ft-progress').innerText)[1] > {seen}")
    page.click("#ft-cancel")
    page.wait_for_function("() => document.querySelector('#ft-progress').innerText.includes('cancelled')",
                           timeout=30_000)


def test_blending_two_classes_draws_the_blend(page: Page, eyes_engine: Engine) -> None:
    page.get_by_label("Blend classes").check()
    page.wait_for_selector("#blend-1", state="visible")
    for index, weight in ((1, "0.6"), (6, "0.4")):  # blue, hazel
        box = page.locator(f"#blend-{index} input[type=number]")
        box.fill(weight)
        box.press("Enter")
    wait_for_shown(page, lambda r: r.classes == {"blue": 0.6, "hazel": 0.4})
    expected = eyes_engine.generate(Request("omniart-eyes", (DEFAULT_SEED,), {"blue": 0.6, "hazel": 0.4},
                                            DEFAULT_TRUNCATION))[0]
    assert np.array_equal(shown_pixels(page), expected)
