"""The Share tab: load a model from the Hugging Face Hub, preview and push a model with its card."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr
import numpy as np
from huggingface_hub import ModelCard
from PIL import Image

from studio import hub, zoo
from studio.engine import Request
from studio.media import grid
from studio.ui.errors import USER_ERRORS

if TYPE_CHECKING:
    from studio.engine import Engine

PREVIEW_SEEDS = tuple(range(8))


TOKEN_RULE = ("Used for this upload only, never stored. In a studio of your own (bound to 127.0.0.1) an empty "
              "box uses this machine's HF_TOKEN; in a shared studio or a Space only a token you type here is used.")


def push_token(typed: str | None, shared: bool) -> str | None:
    """The token for a push: the one typed into the tab, else ``HF_TOKEN`` in a studio of one's own.

    In a shared studio (a public bind, a Space) ``HF_TOKEN`` is the server owner's secret: falling back
    to it would let every visitor push with the owner's rights, so there only a typed token counts.
    """
    if typed and typed.strip():
        return typed.strip()
    return None if shared else os.environ.get("HF_TOKEN")


def card_text(card: ModelCard) -> str:
    """A model card's text without its pictures: the tab shows a picture beside it, and a card's relative
    image links would be broken images here."""
    return "\n".join(line for line in card.text.splitlines() if not line.startswith("!["))


def preview_markdown(folder: Path) -> str:
    """The dry-run folder as the tab shows it: its files with sizes, the card's metadata and text."""
    card = ModelCard.load(folder / hub.CARD_FILE)
    files = "\n".join(f"| `{p.name}` | {p.stat().st_size:,} bytes |" for p in sorted(folder.iterdir()))
    return (f"**The upload, exactly** (nothing was sent):\n\n| file | size |\n|---|---|\n{files}\n\n"
            f"**Metadata**\n\n```yaml\n{card.data.to_yaml()}\n```\n\n---\n{card_text(card)}")


def build_share_tab(demo: gr.Blocks, engine: Engine, shared: bool = False) -> None:
    """Lay out the Share tab inside ``demo``: pull from and push to the Hub; pulled models draw through ``engine``.

    ``shared``: other people use this studio, so the machine's Hugging Face token is never used for them.
    """
    with gr.Row(equal_height=False, elem_id="share"):
        with gr.Column(scale=1, min_width=300, elem_classes=["panel"]):
            gr.Markdown("### Load from the Hub\nAny GAN Studio model repository (`config.json` + "
                        "`model.safetensors`); works offline for models in the local Hugging Face cache.")
            pull_repo = gr.Textbox(label="Repository", placeholder="owner/name", elem_id="share-pull-repo")
            revision = gr.Textbox(label="Revision", placeholder="main (or a tag, branch or commit)",
                                  elem_id="share-revision")
            pull_button = gr.Button("Load", variant="primary", elem_id="share-pull")
            pull_status = gr.Markdown(elem_id="share-pull-status")
            gr.Markdown("### Push to the Hub")
            model = gr.Dropdown(zoo.model_names(), value=zoo.DEFAULT_MODEL, label="Model", allow_custom_value=True,
                                elem_id="share-model")
            push_repo = gr.Textbox(label="Repository", placeholder="your-name/my-model", elem_id="share-push-repo")
            private = gr.Checkbox(False, label="Private repository (when it is created)", elem_id="share-private")
            token = gr.Textbox(label="Hugging Face token with write access", type="password",
                               info=TOKEN_RULE, elem_id="share-token")
            with gr.Row():
                preview_button = gr.Button("Preview (dry run)", elem_id="share-preview")
                push_button = gr.Button("Push", variant="primary", elem_id="share-push")
            push_status = gr.Markdown(elem_id="share-push-status")
        with gr.Column(scale=2, min_width=420):
            sample = gr.Image(label="Seeds 0-7 of the loaded model, or the pushed card's picture", type="filepath",
                              format="png", interactive=False, elem_id="share-sample")
            card = gr.Markdown(elem_id="share-card")

    def pull(repo_id: str, rev: str):
        try:
            # A visitor of a shared studio reads public repositories only, never with the owner's token.
            pulled = hub.pull((repo_id or "").strip(), (rev or "").strip() or None, token=False if shared else None)
            engine.cache.forget(pulled.name)  # another revision may have replaced an already-loaded one
            # Drawn through the engine, so a model that loads but cannot run is reported here, not later.
            images = engine.generate(Request(pulled.name, PREVIEW_SEEDS))
        except hub.HubError as e:
            raise gr.Error(str(e)) from None
        except USER_ERRORS as e:
            raise gr.Error(f"{repo_id} was loaded but cannot draw: {e}") from None
        card_file = pulled.folder / hub.CARD_FILE
        text = card_text(ModelCard.load(card_file)) if card_file.is_file() else ""
        status = (f"Loaded **{pulled.name}** (commit `{pulled.commit[:12]}`): pick it in Explore after reloading "
                  f"the page.")
        return status, gr.update(choices=zoo.model_names(), value=pulled.name), grid(images, cols=8), text

    pull_button.click(pull, [pull_repo, revision], [pull_status, model, sample, card], api_name="pull_model")

    def preview(name: str, repo_id: str) -> tuple[np.ndarray, str]:
        # The dry run copies the whole model (tens of MB): only what the tab shows outlives this call.
        with tempfile.TemporaryDirectory(prefix="gan-studio-upload-") as tmp:
            folder = Path(tmp) / "upload"
            try:
                hub.write_upload(name, (repo_id or "").strip(), folder)
            except hub.HubError as e:
                raise gr.Error(str(e)) from None
            with Image.open(folder / hub.SAMPLE_FILE) as sample_png:
                sample_pixels = np.asarray(sample_png.convert("RGB"))
            return sample_pixels, preview_markdown(folder)

    preview_button.click(preview, [model, push_repo], [sample, card], api_name="push_preview")

    def push(name: str, repo_id: str, is_private: bool, typed: str) -> str:
        token = push_token(typed, shared)
        if token is None and shared:
            raise gr.Error("Paste your own Hugging Face token with write access: a shared studio never pushes "
                           "with its server's token.")
        try:
            url = hub.push(name, (repo_id or "").strip(), token, private=bool(is_private))
        except hub.HubError as e:
            raise gr.Error(str(e)) from None
        return f"Pushed **{name}** to <{url}>."

    push_button.click(push, [model, push_repo, private, token], push_status, api_name="push_model")
    # Models made or pulled since launch can be pushed without reloading the page.
    demo.load(lambda: gr.update(choices=zoo.model_names()), None, model, api_visibility="private")
