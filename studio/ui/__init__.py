"""The browser studio: Gradio Blocks, one module per tab; callbacks convert and delegate."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

# An offline studio must not phone home; gradio reads this when it is imported.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from studio.limits import max_upload_bytes  # noqa: E402
from studio.ui.engine_panel import build_engine_panel  # noqa: E402
from studio.ui.explore import build_explore_tab  # noqa: E402
from studio.ui.finetune import build_finetune_tab  # noqa: E402
from studio.ui.interpolate import build_interpolate_tab  # noqa: E402
from studio.ui.music import build_music_tab  # noqa: E402
from studio.ui.owners import browser_secret, is_shared, new_owner  # noqa: E402
from studio.ui.share import build_share_tab  # noqa: E402

if TYPE_CHECKING:
    from studio.engine import Engine
    from studio.jobs import JobManager
    from studio.ray_backend import RayEngine

ASSETS = Path(__file__).resolve().parents[2] / "assets"
CSS_PATH = ASSETS / "studio.css"

# System fonts only: the studio must render offline, and a web font would be fetched from the internet.
THEME = gr.themes.Soft(
    primary_hue="amber",
    secondary_hue="indigo",
    neutral_hue="stone",
    font=["Inter", "ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "sans-serif"],
    font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "monospace"],
)

# Gradio keeps every upload and every file it served in its cache: every CACHE_SWEEP_S it deletes
# those older than CACHE_MAX_AGE_S, and at shutdown all of them.
CACHE_SWEEP_S = 15 * 60
CACHE_MAX_AGE_S = 6 * 3600

# Artwork reads best on a dark surround, so the studio opens in Gradio's dark mode.
DARK_MODE_JS = "() => { document.body.classList.add('dark'); }"

HEADER = """
<div id="studio-header">
  <div class="brand">GAN Studio</div>
  <div class="tagline">Explore, animate and fine-tune pretrained GANs. Every image comes from a real model, on this machine.</div>
</div>
"""


def build_studio(engine: Engine, manager: JobManager, shared: bool = False) -> gr.Blocks:
    """Build the studio's Blocks (not launched); generation goes through ``engine``, fine-tunes through ``manager``.

    ``shared``: the studio serves other people (see ``studio.ui.owners``): each browser sees its own jobs
    and data sets only, and the machine's Hugging Face token is never used.
    """
    with gr.Blocks(title="GAN Studio", delete_cache=(CACHE_SWEEP_S, CACHE_MAX_AGE_S)) as demo:
        gr.HTML(HEADER)
        keyframes = gr.State([])  # recipe JSONs: Explore adds them, Interpolate animates them
        # Kept in the browser, so a reload (or a restarted server) finds the same owner and its jobs.
        owner = gr.BrowserState(None, storage_key="gan-studio-owner", secret=browser_secret())
        with gr.Tabs():
            with gr.Tab("Explore", id="explore-tab"):
                build_explore_tab(demo, engine, keyframes)
            with gr.Tab("Interpolate", id="interpolate-tab"):
                build_interpolate_tab(demo, engine, keyframes)
            with gr.Tab("Fine-tune", id="finetune-tab"):
                build_finetune_tab(demo, engine, manager, owner, shared)
            with gr.Tab("Music", id="music-tab"):
                build_music_tab(demo, engine, keyframes)
            with gr.Tab("Share", id="share-tab"):
                build_share_tab(demo, engine, shared)
        build_engine_panel(engine)
        demo.load(new_owner, owner, owner, api_visibility="private")
    # Generation events may run concurrently (the default limit is 1 per event): the engine only
    # batches requests that reach it together, so serialising events here would undo its batching.
    demo.queue(default_concurrency_limit=16, max_size=256)
    return demo


def launch(host: str | None = None, port: int | None = None, engine: Engine | RayEngine | None = None,
           **kwargs) -> gr.Blocks:
    """Build the studio on ``engine`` (a local one, or a ``RayEngine``; default: a fresh local one) and serve it.

    Blocks unless ``prevent_thread_lock=True``.
    """
    from studio.engine import Engine
    from studio.jobs import JobManager

    host = host or os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1")
    demo = build_studio(engine or Engine(), JobManager(), shared=is_shared(host))
    demo.launch(
        server_name=host,
        server_port=port or int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        theme=THEME,
        css_paths=[CSS_PATH],
        js=DARK_MODE_JS,
        max_file_size=max_upload_bytes(),  # checked while the upload streams in: a larger one is refused
        **kwargs,
    )
    return demo
