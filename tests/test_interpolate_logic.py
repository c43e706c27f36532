"""The Interpolate tab's callbacks, without a browser: captions, the plan, previews and exports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from studio.engine import Engine
from studio.recipe import Recipe
from studio.ui import interpolate_logic as logic
from studio.ui.files import AnimationFiles, ImageFiles


@pytest.fixture
def engine(tiny: str) -> Iterator[Engine]:
    with Engine(device="cpu", max_wait_ms=0) as e:
        yield e


def keys(*seeds: int, sha: str = "") -> list[str]:
    """Keyframes as Explore adds them (naming the weights they were drawn with, when ``sha`` is given)."""
    return [Recipe("tiny", sha, s, {"cat": 1.0, "fox": 3.0} if s % 2 else {"dog": 1.0}, 0.7, "sefa",
                   {0: 1.0} if s == 3 else {}).to_json() for s in seeds]


def test_captions_say_seed_classes_truncation_and_edits() -> None:
    first, second = (Recipe.from_json(t) for t in keys(2, 3))
    assert logic.keyframe_caption(1, first) == "1 · seed 2 · dog · ψ 0.7"
    assert logic.keyframe_caption(2, second) == "2 · seed 3 · cat 25% fox 75% · ψ 0.7 · 1 edits"


def test_the_plan_names_the_file_by_every_setting_and_checks_the_size(engine: Engine) -> None:
    base = (keys(1, 2), "slerp", 4, "linear", True, 12, 2)
    plan = logic.plan(engine, *base, ".gif")
    assert plan.size == 64 and plan.name.startswith("tiny-8frames-") and plan.name.endswith(".gif")
    assert logic.plan(engine, *base, ".gif") == plan
    assert logic.plan(engine, keys(1, 2), "lerp", 4, "linear", True, 12, 2, ".gif").name != plan.name
    with pytest.raises(ValueError, match="keyframes"):
        logic.plan(engine, keys(1), "slerp", 4, "linear", True, 12, 2, ".gif")


def test_a_preview_shows_evenly_spaced_frames_and_a_repeat_is_the_same_file(engine: Engine) -> None:
    exports = AnimationFiles()
    sha = engine.model("tiny").weights_sha256
    plan = logic.plan(engine, keys(1, 2, 3, sha=sha), "slerp", 40, "linear", True, 12, 1, ".gif")  # 120 frames
    path, gallery = logic.preview(engine, exports, plan)
    assert Path(path).is_file() and len(gallery) == 40 <= logic.PREVIEW_FRAMES  # one frame in 3
    assert [caption for _, caption in gallery][:2] == ["key 1", "4"]
    again_path, again = logic.preview(engine, exports, plan)  # drawn again, only the frames shown
    assert again_path == path and all(np.array_equal(a, b) for (a, _), (b, _) in zip(gallery, again))
    assert logic.write(engine, exports, plan) == path


def test_the_keyframe_strip_draws_each_keyframe_with_its_caption(engine: Engine) -> None:
    files = ImageFiles()  # its folder goes with it
    strip = logic.keyframe_strip(engine, files, keys(1, 2))
    assert [caption for _, caption in strip] == ["1 · seed 1 · cat 25% fox 75% · ψ 0.7", "2 · seed 2 · dog · ψ 0.7"]
    assert all(Path(path).is_file() for path, _ in strip)
    summary = logic.summary_markdown([Recipe.from_json(t) for t in keys(1, 2)], 4, True, 12, 2, engine.config)
    assert summary.startswith("**2 keyframes** → 8 frames (2 segments × 4) · 0.7 s at 12 fps · 64×64 px")
