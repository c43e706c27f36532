"""The Share tab's callbacks, without a browser: the dry run, the token rule, pulls that fail in words."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import constants

from studio import hub
from studio.engine import Engine
from studio.ui import share_logic as logic


@pytest.fixture
def engine(tiny: str) -> Iterator[Engine]:
    with Engine(device="cpu", max_wait_ms=0) as e:
        yield e


def test_the_dry_run_shows_the_upload_exactly(engine: Engine) -> None:
    sample, text = logic.dry_run(engine, "tiny", "someone/tiny")
    assert sample is not None and sample.ndim == 3
    for name in (hub.CARD_FILE, "config.json", "model.safetensors", hub.SAMPLE_FILE):
        assert f"| `{name}` |" in text
    assert "nothing was sent" in text and "![" not in text


def test_a_shared_studio_never_pushes_without_a_typed_token(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_server_secret")
    with pytest.raises(ValueError, match="a shared studio never pushes with its server's token"):
        logic.push_model(engine, "tiny", "someone/tiny", False, "  ", shared=True)


def test_pulling_a_repository_that_is_not_there_says_so(engine: Engine, monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(hub.HubError, match="nobody/nothing"):
        logic.load_from_hub(engine, " nobody/nothing ", "", shared=True)
