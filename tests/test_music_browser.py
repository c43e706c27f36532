"""The Music tab in a real Chromium: a WAV dropped in, its onsets shown, a short music video rendered and downloaded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import imageio_ffmpeg
import pytest
from playwright.sync_api import sync_playwright

from studio.engine import Engine
from studio.loadtest import free_port
from studio.ui.music import build_music_tab
from tests.conftest import launch_chromium
from tests.test_audio import click_track, write_wav
from tests.test_music import BEATS, make_vivid_model, streams

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture
def music_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The tab alone in a Blocks, on a studio home holding the vivid tiny model; its URL."""
    home = tmp_path / "home"
    monkeypatch.setenv("STUDIO_HOME", str(home))
    make_vivid_model(home)
    with Engine("cpu") as engine:
        with gr.Blocks() as demo:
            build_music_tab(demo, engine, gr.State([]))
        demo.queue(default_concurrency_limit=16)
        port = free_port()
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        yield f"http://127.0.0.1:{port}/"
        demo.close()


def test_a_dropped_wav_becomes_a_music_video_with_its_sound(music_app: str, tmp_path: Path) -> None:
    song = write_wav(tmp_path / "beat.wav", click_track(BEATS, 3.0))
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(music_app)
        page.set_input_files("#music-audio input[type=file]", str(song))
        page.wait_for_function("() => document.querySelector('#music-summary').innerText.includes('5 onsets')",
                               timeout=60_000)
        assert "72 frames at 24 fps" in page.inner_text("#music-summary")
        assert page.locator("#music-waveform img").count() == 1
        page.locator("#music-model input").fill("vivid")
        page.locator("#music-model input").press("Enter")
        page.locator("#music-seeds textarea, #music-seeds input").first.fill("3,8")
        page.fill("#music-duration input", "2")
        page.press("#music-duration input", "Enter")
        page.get_by_label("1× (model size)").check()
        page.click("#music-render")
        link = page.locator("#music-download a[href*='.mp4']")
        link.wait_for(timeout=120_000)
        video = tmp_path / "downloaded.mp4"
        video.write_bytes(page.request.get(link.first.get_attribute("href")).body())
        recipe = page.request.get(page.locator("#music-download a[href*='.json']").first.get_attribute("href")).text()
        browser.close()
    assert imageio_ffmpeg.count_frames_and_secs(str(video))[0] == 48  # 2 s at 24 fps
    assert streams(video) == ["Video: h264", "Audio: aac"]
    assert next(imageio_ffmpeg.read_frames(str(video)))["size"] == (32, 32)
    assert '"model": "vivid"' in recipe and '"seed": 8' in recipe and '"duration": 2.0' in recipe
