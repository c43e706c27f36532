"""Remixing in a real Chromium: the Fine-tune tab's checkpoint scrubber keeps an early checkpoint as a model, and
Explore's "base <-> fine-tuned" slider blends that model back toward its base, live."""

from __future__ import annotations

import io
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Page, sync_playwright

from studio.engine import Engine
from studio.loadtest import launched_studio
from studio.models.folder import load_config
from studio.recipe import read_recipe, request_for
from tests.conftest import (
    MAIN_IMG, job_workers_stopped, launch_chromium, noise_artworks, shown_pixels, start_long_fine_tune,
)
from tests.test_browser import wait_for_shown
from tests.test_style_browser import pick_model

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def scrub_to(page: Page, index: int) -> str:
    """Move the checkpoint scrubber to ``index`` (0: the oldest); the caption it shows then."""
    box = page.locator("#ft-scrub input[type=number]")
    box.fill(str(index))
    box.press("Enter")
    page.wait_for_function(f"() => document.querySelector('#ft-scrub-caption').innerText.includes("
                           f"'Checkpoint {index + 1} of')", timeout=60_000)
    return page.inner_text("#ft-scrub-caption")


def scrub_pixels(page: Page) -> np.ndarray:
    src = page.get_attribute("#ft-scrub-image img", "src")
    return np.asarray(Image.open(io.BytesIO(page.request.get(src).body())).convert("RGB"))


def test_scrub_keep_an_early_checkpoint_then_blend_it_back_toward_its_base(converted_home: Path,
                                                                           tmp_path: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(converted_home, home)
    with job_workers_stopped(home), launched_studio(home, tmp_path / "app.log") as (url, _), sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        page.wait_for_selector(MAIN_IMG, timeout=90_000)
        page.get_by_role("tab", name="Fine-tune").click()
        start_long_fine_tune(page, noise_artworks(tmp_path / "art"), "scrub-prints", "scrub-eyes")
        # Checkpoints at step 1, then every 100 steps: wait for three (the slider's maximum index is 2).
        page.wait_for_function("() => Number(document.querySelector('#ft-scrub input[type=number]')?.max) >= 2",
                               timeout=600_000)
        page.click("#ft-cancel")
        page.wait_for_function("() => document.querySelector('#ft-progress').innerText.includes('cancelled')",
                               timeout=60_000)
        newest = scrub_to(page, 2)
        late = scrub_pixels(page)
        oldest = scrub_to(page, 0)
        early = scrub_pixels(page)
        steps = [int(caption.split("step ")[1].replace(",", "")) for caption in (oldest, newest)]
        assert steps[1] >= steps[0] + 100, (oldest, newest)
        assert late.shape == early.shape and not np.array_equal(late, early)  # the style arriving

        page.locator("#ft-save-name input, #ft-save-name textarea").first.fill("early-eyes")
        page.click("#ft-save")
        config_file = home / "models" / "early-eyes" / "config.json"
        page.wait_for_function("() => document.body.innerText.includes('Saved early-eyes')", timeout=60_000)
        lineage = load_config(config_file.parent).lineage
        assert lineage["base_model"] == "tiny" and lineage["steps"] == steps[0]

        page.get_by_role("tab", name="Explore").click()
        assert not page.locator("#tuned").is_visible()  # the default model was not fine-tuned here
        pick_model(page, "early-eyes")
        assert page.locator("#tuned").is_visible() and "tiny (0)" in page.inner_text("#tuned")
        own = shown_pixels(page)
        box = page.locator("#tuned input[type=number]")
        box.fill("0")
        box.press("Enter")
        at_base = wait_for_shown(page, lambda r: r.model == "early-eyes" and r.tuned == 0.0)
        box.fill("0.5")
        box.press("Enter")
        halfway = wait_for_shown(page, lambda r: r.model == "early-eyes" and r.tuned == 0.5)
        browser.close()
    shown = {name: np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
             for name, data in (("base", at_base), ("half", halfway))}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STUDIO_HOME", str(home))
        made = read_recipe(at_base)
        with Engine() as engine:
            base = engine.generate(request_for(replace(made, model="tiny", tuned=None)))[0]
            half = engine.generate(request_for(read_recipe(halfway)))[0]
    assert np.array_equal(shown["base"], base)  # slider at 0: the base model's own image
    assert np.array_equal(shown["half"], half)  # the PNG's recipe replays the blend
    assert len({own.tobytes(), base.tobytes(), half.tobytes()}) == 3
