"""Style mixing on an imported StyleGAN2 snapshot, in the Explore tab of a real Chromium."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Page, sync_playwright

from studio import recipe
from studio.engine import Engine
from studio.loadtest import launched_studio
from studio.storage import temporary_home
from tests.conftest import MAIN_IMG, current_src, launch_chromium, run_cli, shown_pixels, wait_for_new_image
from tests.test_browser import wait_for_shown
from tests.test_stylegan2_import import write_snapshot

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def pick_model(page: Page, name: str) -> None:
    old = current_src(page)
    page.locator("#model-picker input").fill(name)
    page.locator("#model-picker input").press("Enter")
    wait_for_new_image(page, old)


def test_style_mixing_an_imported_snapshot_in_explore(converted_home: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(converted_home, home)
    write_snapshot(tmp_path / "network-snapshot-000200.pkl", num_classes=3)
    made = run_cli("import", str(tmp_path / "network-snapshot-000200.pkl"), "--name", "mine", "--classes",
                   "ink,oil,wash", home=home)
    assert made.returncode == 0, made.stderr
    with launched_studio(home, tmp_path / "app.log") as (url, _), sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        page.wait_for_selector(MAIN_IMG, timeout=90_000)
        assert not page.locator("#styles").is_visible()  # the default DCGAN has no style layers
        pick_model(page, "mine")
        assert page.locator("#styles").is_visible()
        plain = shown_pixels(page)

        page.fill("#mix-seed input", "5")
        page.press("#mix-seed input", "Enter")
        mixed = wait_for_shown(page, lambda r: r.model == "mine" and r.mix_seed == 5)
        assert recipe.read_recipe(mixed).mix_layers == (0, 3)  # coarse by default

        page.locator("#mix-band").get_by_role("radio", name="fine").check()
        fine = wait_for_shown(page, lambda r: r.mix_seed == 5 and r.mix_layers == (5, 5))  # 16 px: 6 layers

        page.click("#reroll-noise")
        rerolled = wait_for_shown(page, lambda r: r.noise_seed is not None and r.mix_layers == (5, 5))
        browser.close()
    shown = [np.asarray(_png(data)) for data in (mixed, fine, rerolled)]
    assert not np.array_equal(shown[0], plain) and not np.array_equal(shown[1], shown[0])
    assert not np.array_equal(shown[2], shown[1])
    # Each PNG's recipe replays to its own pixels through the engine.
    with temporary_home(home), Engine("cpu") as engine:
        for data, pixels in zip((mixed, fine, rerolled), shown):
            np.testing.assert_array_equal(engine.generate(recipe.request_for(recipe.read_recipe(data)))[0], pixels)


def _png(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")
