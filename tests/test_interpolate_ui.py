"""The Interpolate tab: through gradio_client and a real Chromium, on its own app and in the studio."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import imageio_ffmpeg
import numpy as np
import pytest
from gradio_client import Client
from PIL import Image
from playwright.sync_api import Page, sync_playwright

from studio import animation
from studio.engine import Engine
from studio.recipe import Recipe, request_for
from studio.ui.interpolate import HEAVY_EVENTS, HEAVY_LIMIT, build_interpolate_tab, summary_markdown
from studio.ui.interpolate_logic import PREVIEW_FRAMES
from studio.loadtest import free_port
from tests.conftest import (
    MAIN_IMG, RecordingEngine, launch_chromium, make_tiny_model, set_seed, shown_pixels,
)

pytestmark = pytest.mark.slow

KEYFRAMES = [(3, {"cat": 1.0}, 1.0), (7, {"dog": 0.6, "fox": 0.4}, 0.8), (11, {}, 0.7)]


@pytest.fixture(scope="module")
def tiny_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Engine, list[Recipe]]]:
    """The tab alone in a Blocks, its keyframes state holding three tiny-model recipes; its URL, engine, keyframes."""
    home = tmp_path_factory.mktemp("interp-home")
    make_tiny_model(home)
    with pytest.MonkeyPatch.context() as mp, RecordingEngine() as engine:
        mp.setenv("STUDIO_HOME", str(home))
        sha = engine.cache.get("tiny").weights_sha256
        recipes = [Recipe("tiny", sha, seed, classes, psi) for seed, classes, psi in KEYFRAMES]
        with gr.Blocks() as demo:
            keyframes = gr.State([r.to_json() for r in recipes])
            build_interpolate_tab(demo, engine, keyframes)
        demo.queue(default_concurrency_limit=16)
        port = free_port()
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        yield f"http://127.0.0.1:{port}/", engine, recipes
        demo.close()


def rgb(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_preview_frames_start_at_each_keyframe_exactly(tiny_app: tuple[str, Engine, list[Recipe]]) -> None:
    url, engine, recipes = tiny_app
    gif, frames = Client(url, verbose=False).predict("slerp", 4, "ease-in-out", True, 10, 2,
                                                     api_name="/interpolate_preview")
    assert len(frames) == 12  # 3 segments (looping) x 4
    assert [f["caption"] for f in frames[:5]] == ["key 1", "2", "3", "4", "key 2"]
    for k, recipe in enumerate(recipes):
        assert np.array_equal(rgb(frames[4 * k]["image"]), engine.generate(request_for(recipe))[0]), k
    with Image.open(gif) as animation:
        assert animation.n_frames == 12 and animation.size == (64, 64)  # 2x the model's 32 px
        assert animation.info["duration"] == 100


def test_exports_have_the_chosen_frames_size_and_codec(tiny_app: tuple[str, Engine, list[Recipe]]) -> None:
    client = Client(tiny_app[0], verbose=False)
    mp4 = client.predict("lerp", 5, "linear", False, 20, 4, api_name="/interpolate_mp4")
    assert Path(mp4).suffix == ".mp4"
    assert imageio_ffmpeg.count_frames_and_secs(mp4) == (10, 0.5)  # 2 segments x 5 at 20 fps
    meta = next(imageio_ffmpeg.read_frames(mp4))
    assert meta["size"] == (128, 128) and meta["codec"] == "h264"
    gif = client.predict("lerp", 5, "linear", False, 20, 1, api_name="/interpolate_gif")
    with Image.open(gif) as animation:
        assert animation.n_frames == 10 and animation.size == (32, 32)


def test_a_long_preview_shows_a_sample_of_its_frames_and_every_frame_in_the_gif(
        tiny_app: tuple[str, RecordingEngine, list[Recipe]]) -> None:
    url, engine, recipes = tiny_app
    client = Client(url, verbose=False)
    engine.sizes.clear()
    gif, frames = client.predict("lerp", 100, "linear", True, 24, 1, api_name="/interpolate_preview")
    assert engine.sizes and max(engine.sizes) <= animation.FRAMES_PER_REQUEST and sum(engine.sizes) == 300
    with Image.open(gif) as shown:
        assert shown.n_frames == 300  # 3 looping segments x 100
    step = 7  # the smallest step that shows at most PREVIEW_FRAMES of 300
    assert len(frames) == len(range(0, 300, step)) <= PREVIEW_FRAMES < len(range(0, 300, step - 1))
    assert [f["caption"] for f in frames[:3]] == ["key 1", "8", "15"]
    assert np.array_equal(rgb(frames[0]["image"]), engine.generate(request_for(recipes[0]))[0])

    engine.sizes.clear()  # again: the GIF exists, so only the frames shown are drawn
    again, frames_again = client.predict("lerp", 100, "linear", True, 24, 1, api_name="/interpolate_preview")
    assert sum(engine.sizes) == len(frames)
    assert [rgb(f["image"]).tolist() for f in frames_again[:5]] == [rgb(f["image"]).tolist() for f in frames[:5]]


def test_previews_and_exports_take_turns_in_one_group(tiny_app: tuple[str, RecordingEngine, list[Recipe]]) -> None:
    with gr.Blocks() as demo:
        build_interpolate_tab(demo, tiny_app[1], gr.State([]))
    heavy = {fn.api_name: (fn.concurrency_id, fn.concurrency_limit) for fn in demo.fns.values()
             if fn.api_name in ("interpolate_preview", "interpolate_gif", "interpolate_mp4")}
    assert len(heavy) == 3 and set(heavy.values()) == {(HEAVY_EVENTS, HEAVY_LIMIT)}


def test_the_summary_states_the_pixel_limit(tiny: str) -> None:
    recipes = [Recipe(tiny, "", seed) for seed in (1, 2, 3)]
    text = summary_markdown(recipes, 120, True, 12, 4)  # 360 frames at 128x128
    assert "360 frames (3 segments × 120) · 30.0 s at 12 fps · 128×128 px" in text
    assert ("5.6 megapixels of frames; one animation may have up to 512 megapixels of frames "
            "(2,048 frames at 512×512)") in text
    assert "The preview shows one frame in 8." in text


@pytest.fixture
def page(tiny_app: tuple[str, Engine, list[Recipe]]) -> Iterator[Page]:
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(tiny_app[0])
        yield page
        browser.close()


def thumbnails(page: Page, gallery: str, count: int) -> None:
    page.wait_for_function(f"document.querySelectorAll('#{gallery} .thumbnail-item img').length === {count}",
                           timeout=60_000)


def fetch(page: Page, gallery: str, index: int = 0) -> np.ndarray:
    """The pixels of a gallery's ``index``-th thumbnail, fetched from its own src."""
    src = page.locator(f"#{gallery} .thumbnail-item img").nth(index).get_attribute("src")
    return np.asarray(Image.open(io.BytesIO(page.request.get(src).body())).convert("RGB"))


@pytest.mark.browser
def test_browser_strip_preview_export_and_trimming(page: Page, tiny_app: tuple[str, Engine, list[Recipe]]) -> None:
    _, engine, recipes = tiny_app
    thumbnails(page, "interp-keyframes", 3)
    assert "3 keyframes" in page.inner_text("#interp-summary")
    assert "2 · seed 7 · dog 60% fox 40% · ψ 0.8" in page.inner_text("#interp-keyframes")
    assert np.array_equal(fetch(page, "interp-keyframes"),
                          engine.generate(request_for(recipes[0]))[0])

    page.click("#interp-preview")
    thumbnails(page, "interp-frames", 36)  # the defaults: loop, 12 frames per segment
    assert np.array_equal(fetch(page, "interp-frames"), engine.generate(request_for(recipes[0]))[0])
    assert page.locator("#interp-animation img").count() == 1

    page.click("#interp-export-mp4")
    page.wait_for_selector("#interp-download a[href*='.mp4']", timeout=60_000)

    page.click("#interp-remove-last")
    thumbnails(page, "interp-keyframes", 2)
    assert "2 keyframes → 24 frames" in page.inner_text("#interp-summary")
    page.click("#interp-remove-last")
    thumbnails(page, "interp-keyframes", 1)
    page.click("#interp-preview")
    page.wait_for_selector("text=an animation needs 2 to 16 keyframes, not 1", timeout=30_000)
    page.click("#interp-clear")
    thumbnails(page, "interp-keyframes", 0)
    assert "Add 2 to 16 keyframes" in page.inner_text("#interp-summary")


@pytest.mark.browser
def test_studio_keyframes_added_in_explore_animate_in_interpolate(studio_url: str) -> None:
    """Needs the tab wired into the studio (``build_studio``) next to Explore's "Add as keyframe"."""
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(studio_url)
        page.wait_for_selector(MAIN_IMG, timeout=90_000)
        first = shown_pixels(page)
        page.click("#add-keyframe")
        set_seed(page, 40)
        second = shown_pixels(page)
        page.click("#add-keyframe")

        page.get_by_role("tab", name="Interpolate").click()
        thumbnails(page, "interp-keyframes", 2)
        page.click("#interp-preview")
        thumbnails(page, "interp-frames", 24)  # loop: 2 segments x 12
        assert np.array_equal(fetch(page, "interp-frames"), first)
        assert np.array_equal(fetch(page, "interp-frames", 12), second)
        browser.close()
    assert not np.array_equal(first, second)
