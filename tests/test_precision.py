"""The precision policy: capability first, then calibration; the engine's fast and exact requests; recipes; the
bound between bf16 and fp32 on the default model. bf16 runs on any CPU (emulated where not native), so every
branch is exercised here whatever the machine; calibration runs on a fake clock, so nothing here is timed."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from studio import precision, zoo
from studio.engine import Engine, generate_unbatched, precision_of, prepare
from studio.recipe import Recipe, RecipeError, read_recipe, request_for, stamped
from studio.sampling import Request
from tests.conftest import run_cli

CPU = torch.device("cpu")


class FakeClock:
    """``time.perf_counter`` for calibration: each draw advances it by its precision's cost per image."""

    def __init__(self, cost: dict[torch.dtype | None, float]) -> None:
        self.now, self.cost = 0.0, cost

    def perf_counter(self) -> float:
        return self.now

    def draw(self, images: dict[torch.dtype | None, np.ndarray]) -> precision.Draw:
        def draw(dtype: torch.dtype | None, n: int) -> np.ndarray:
            self.now += self.cost[dtype] * n
            return np.repeat(images[dtype][None], n, axis=0)

        return draw


def never(dtype: torch.dtype | None, n: int) -> np.ndarray:
    raise AssertionError("no calibration where bf16 is not native")


PIXELS = np.full((4, 4, 3), 100, np.uint8)


def calibrated(monkeypatch: pytest.MonkeyPatch, cost: dict, bf16_pixels: np.ndarray = PIXELS) -> precision.Choice:
    """``choose`` in auto mode on a CPU that reports AMX, timed by a fake clock with ``cost`` s per image."""
    clock = FakeClock(cost)
    monkeypatch.setattr(precision, "time", clock)
    monkeypatch.setattr(precision, "cpu_bf16_support", lambda: "AMX")
    return precision.choose(CPU, clock.draw({None: PIXELS, torch.bfloat16: bf16_pixels}), "auto")


def test_a_cpu_without_native_bf16_draws_in_fp32_without_measuring(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_bf16_support", lambda: None)
    choice = precision.choose(CPU, never, "auto")
    assert choice.dtype is None and choice.name == "fp32"
    assert choice.reason == f"fp32: this CPU has no native bf16 ({torch.backends.cpu.get_cpu_capability()})"
    assert precision.for_training(CPU, "auto").dtype is None


def test_native_bf16_is_chosen_only_when_calibration_finds_it_faster_and_close(monkeypatch: pytest.MonkeyPatch) -> None:
    faster = calibrated(monkeypatch, {None: 0.02, torch.bfloat16: 0.01})
    assert faster.dtype is torch.bfloat16 and faster.reason == "bf16: 2.0x faster than fp32 (AMX) in calibration"
    slower = calibrated(monkeypatch, {None: 0.01, torch.bfloat16: 0.02})
    assert slower.dtype is None and "bf16 was 0.50x fp32's speed" in slower.reason
    barely = calibrated(monkeypatch, {None: 0.0105, torch.bfloat16: 0.01})  # within timing noise: not worth it
    assert barely.dtype is None
    broken = calibrated(monkeypatch, {None: 0.02, torch.bfloat16: 0.01}, PIXELS + 40)
    assert broken.dtype is None and "bf16 moved pixels by 40 levels" in broken.reason
    assert precision.for_training(CPU, "auto").reason == "bf16: native on this device (AMX)"


def test_the_environment_overrides_the_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(precision.ENV, "exact")
    assert precision.choose(CPU, never).dtype is None
    monkeypatch.setenv(precision.ENV, "fast")
    forced = precision.choose(CPU, never)
    assert forced.dtype is torch.bfloat16 and forced.reason.startswith("bf16: STUDIO_PRECISION=fast")
    assert precision.for_training(CPU).dtype is torch.bfloat16
    monkeypatch.setenv(precision.ENV, "fastest")
    with pytest.raises(ValueError, match="STUDIO_PRECISION must be one of auto, exact, fast"):
        precision.choose(CPU, never)


def test_the_engine_draws_fast_and_exact_requests_in_their_own_precision(
        tiny: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(precision.ENV, "fast")
    model = prepare(zoo.load(tiny))
    assert precision_of(model).dtype is torch.bfloat16
    seeds = (1, 2, 3)
    exact, fast = generate_unbatched(model, seeds, "dog"), generate_unbatched(model, seeds, "dog", dtype=torch.bfloat16)
    assert not np.array_equal(exact, fast)  # bf16 really ran: the test below could tell the two apart
    loaded = threading.Event()

    def after_both_queued(name: str, device: torch.device) -> zoo.LoadedModel:
        loaded.wait(60)
        return zoo.load(name, device)

    with Engine(loader=after_both_queued) as engine:  # so both requests are one batch, drawn in two passes
        futures = [engine.submit(Request(tiny, seeds, "dog", precision=p)) for p in ("fast", "exact")]
        loaded.set()
        drawn = [f.result(timeout=60) for f in futures]
        assert engine.stats()["batches"] == 2
        assert engine.precision_for(tiny).name == "bf16"
        assert "tiny: bf16: STUDIO_PRECISION=fast" in engine.stats()["precision"]
    np.testing.assert_array_equal(drawn[0], fast)
    np.testing.assert_array_equal(drawn[1], exact)


def test_bf16_stays_within_a_few_levels_of_fp32_on_the_default_model(eyes: zoo.LoadedModel) -> None:
    # Measured on several CPUs: at most 2.5 levels, mean 0.17 (the same maths on AMX and emulated).
    seeds, cls = (0, 1), zoo.OMNIART_CLASSES[0]
    exact = generate_unbatched(eyes, seeds, cls).astype(np.int16)
    fast = generate_unbatched(eyes, seeds, cls, dtype=torch.bfloat16).astype(np.int16)
    difference = np.abs(fast - exact)
    assert 0 < difference.max() <= 3 and difference.mean() < 0.5


def test_a_recipe_records_a_reduced_precision_and_leaves_fp32_out() -> None:
    recipe = Recipe("tiny", "", 3)
    assert "precision" not in recipe.to_json() and stamped(recipe, "fp32") == recipe
    drawn = stamped(recipe, "bf16")
    assert Recipe.from_json(drawn.to_json()) == drawn and '"precision": "bf16"' in drawn.to_json()
    assert request_for(drawn).precision == "exact"  # replays are exact unless asked
    assert request_for(drawn, "fast").precision == "fast"
    with pytest.raises(RecipeError, match="precision is one of bf16, fp16"):
        replace(recipe, precision="fp64")
    with pytest.raises(ValueError, match="precision must be one of fast, exact"):
        Request("tiny", (1,), precision="bf16")


def test_the_command_line_draws_exact_unless_asked(tiny_home: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(precision.ENV, "fast")  # bf16 for fast draws, even where emulated
    exact, fast = tmp_path / "exact.png", tmp_path / "fast.png"
    for args in (("--out", str(exact)), ("--precision", "fast", "--out", str(fast))):
        done = run_cli("generate", "--model", "tiny", "--seeds", "4", *args, home=tiny_home)
        assert done.returncode == 0, done.stderr
    assert read_recipe(exact).precision is None and read_recipe(fast).precision == "bf16"
