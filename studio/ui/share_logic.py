"""What the Share tab does, without Gradio: pull from the Hub, dry-run and push an upload, the token rule.

Functions raise ``hub.HubError`` or ``ValueError`` with a message for the artist; the tab turns those
into ``gr.Error``.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from huggingface_hub import ModelCard

from studio import hub
from studio.media import grid
from studio.sampling import Request
from studio.ui.errors import USER_ERRORS
from studio.ui.files import pixels

if TYPE_CHECKING:
    from studio.engine import Engine

PREVIEW_SEEDS = tuple(range(8))
TOKEN_RULE = ("Used for this upload only, never stored. In a studio of your own (bound to 127.0.0.1) an empty "
              "box uses this machine's HF_TOKEN; in a shared studio or a Space only a token you type here is used.")
NO_SHARED_TOKEN = ("Paste your own Hugging Face token with write access: a shared studio never pushes with its "
                   "server's token.")


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


@dataclass(frozen=True)
class Loaded:
    """A model pulled from the Hub: what to say, its name, its first seeds drawn, its card's text."""

    status: str
    name: str
    sample: np.ndarray
    card: str


def load_from_hub(engine: Engine, repo_id: str, revision: str, shared: bool) -> Loaded:
    """Pull ``repo_id`` at ``revision`` and draw its first seeds through the engine."""
    # A visitor of a shared studio reads public repositories only, never with the owner's token.
    pulled = hub.pull((repo_id or "").strip(), (revision or "").strip() or None, token=False if shared else None)
    try:
        # Drawn through the engine, so a model that loads but cannot run is reported here, not later.
        images = engine.generate(Request(pulled.name, PREVIEW_SEEDS, precision="fast"))
    except USER_ERRORS as e:
        raise ValueError(f"{repo_id} was loaded but cannot draw: {e}") from None
    card_file = pulled.folder / hub.CARD_FILE
    text = card_text(ModelCard.load(card_file)) if card_file.is_file() else ""
    status = f"Loaded **{pulled.name}** (commit `{pulled.commit[:12]}`): pick it in Explore after reloading the page."
    return Loaded(status, pulled.name, grid(images, cols=8), text)


def dry_run(engine: Engine, name: str, repo_id: str) -> tuple[np.ndarray | None, str]:
    """The upload of model ``name`` to ``repo_id``, made but not sent: its sample grid and its description."""
    # The dry run copies the whole model (tens of MB): only what the tab shows outlives this call.
    with tempfile.TemporaryDirectory(prefix="gan-studio-upload-") as tmp:
        folder = Path(tmp) / "upload"
        hub.write_upload(engine, name, (repo_id or "").strip(), folder)
        return pixels(folder / hub.SAMPLE_FILE), preview_markdown(folder)


def push_model(engine: Engine, name: str, repo_id: str, private: bool, typed: str | None, shared: bool) -> str:
    """Push model ``name`` to ``repo_id`` with the token the rule allows; what to say."""
    token = push_token(typed, shared)
    if token is None and shared:
        raise ValueError(NO_SHARED_TOKEN)
    url = hub.push(engine, name, (repo_id or "").strip(), token, private=bool(private))
    return f"Pushed **{name}** to <{url}>."
