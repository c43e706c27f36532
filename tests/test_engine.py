"""The batched engine: exact pixels in batches, fairness, backpressure, faults, cache, timeouts."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
import time
from collections import Counter, deque
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from studio import bench, zoo
from studio import engine as engine_module
from studio.models.folder import ModelConfig, build_generator
from studio.engine import (
    BUSY_MESSAGE, Engine, EngineBusy, EngineClosed, EngineTimeout, GenerationError, ModelCache, Request,
    default_device, generate_unbatched, model_bytes, prepare,
)
from studio.storage import atomic_write, swap_dir

CLASSES = ("cat", "dog", "fox")
WAIT = 10.0  # seconds; only reached when something is broken


class Probe(nn.Module):
    """Wraps a generator: logs each forward's batch size, and can hold, fail or run out of memory."""

    def __init__(self, inner: nn.Module, name: str, models: TinyZoo) -> None:
        super().__init__()
        self.inner, self.name, self.models = inner, name, models

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        models = self.models
        models.forwards.append((self.name, len(z)))
        models.entered.set()
        assert models.release.wait(WAIT), "test never released the gate"
        if self.name in models.failing:
            raise RuntimeError("boom")
        if len(z) > models.oom_above.get(self.name, len(z)):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.inner(z, c)

    num_style_layers = 0  # the face of the DCGAN it wraps

    def draw(self, latents: torch.Tensor, c: torch.Tensor | None = None, noise_seeds: None = None) -> torch.Tensor:
        return self(latents, c)

    def bendable_layers(self) -> list[nn.Module]:
        return self.inner.bendable_layers()

    def bendable_channels(self) -> list[int]:
        return self.inner.bendable_channels()


class TinyZoo:
    """A loader of tiny seeded conditional DCGANs (32x32), with its calls and forward passes logged.

    ``release`` is set (open) unless a test clears it to hold the worker inside a forward pass.
    """

    def __init__(self) -> None:
        self.loads: Counter[str] = Counter()
        self.forwards: list[tuple[str, int]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.failing: set[str] = set()
        self.oom_above: dict[str, int] = {}

    def load(self, name: str, device: torch.device) -> zoo.LoadedModel:
        self.loads[name] += 1
        config = ModelConfig("dcgan", {"resolution": 32, "z_dim": 8, "base_width": 8, "num_classes": 3}, CLASSES)
        with torch.random.fork_rng():
            torch.manual_seed(sum(map(ord, name)))
            inner = build_generator(config)
        return zoo.LoadedModel(name, config, Probe(inner, name, self).to(device).eval(), Path("/nonexistent"))

    def hold(self) -> None:
        """Make the next forward pass wait for ``release``."""
        self.entered.clear()
        self.release.clear()

    def wait_entered(self) -> None:
        assert self.entered.wait(WAIT), "the worker never started a forward pass"


@pytest.fixture
def models() -> TinyZoo:
    return TinyZoo()


@pytest.fixture
def engine(models: TinyZoo):
    with Engine("cpu", max_wait_ms=1.0, loader=models.load) as eng:
        yield eng


def direct(engine: Engine, request: Request) -> np.ndarray:
    """The request's images without the engine's queue, on the very model the engine runs."""
    return generate_unbatched(engine.cache.get(request.model), request.seeds, request.classes, request.truncation)


def hold_worker(engine: Engine, models: TinyZoo, name: str = "a") -> object:
    """Park the worker inside a forward pass for ``name``, so that what is submitted next queues up."""
    models.hold()
    first = engine.submit(Request(name, (0,)))
    models.wait_entered()
    return first


MIXED = [
    Request("a", (1, 2, 3), "cat"),
    Request("a", (4,), "dog"),
    Request("a", (5, 6), {"cat": 0.25, "fox": 0.75}),
    Request("a", (7,), None, 0.5),
    Request("a", (1,), "fox"),
]


def test_batched_pixels_equal_unbatched_and_the_direct_path(engine: Engine, models: TinyZoo) -> None:
    first = hold_worker(engine, models)
    futures = [engine.submit(r) for r in MIXED]
    models.release.set()
    batched = [f.result(WAIT) for f in futures]
    assert models.forwards[1:] == [("a", 8)]  # all five requests went through one pass
    alone = [engine.generate(r) for r in MIXED]
    for request, b, a in zip(MIXED, batched, alone):
        assert b.shape == (len(request.seeds), 32, 32, 3) and b.dtype == np.uint8
        assert np.array_equal(b, a)
        assert np.array_equal(b, direct(engine, request))
    assert not np.array_equal(batched[0][0], batched[4][0])  # seed 1 as cat vs as fox: own class each
    assert first.result(WAIT).shape == (1, 32, 32, 3)


def test_engine_layout_differs_from_the_plain_model_by_at_most_one_level(engine: Engine, models: TinyZoo) -> None:
    request = Request("a", tuple(range(16)), "dog")
    plain = models.load("a", torch.device("cpu"))
    difference = engine.generate(request).astype(int) - generate_unbatched(plain, request.seeds, "dog").astype(int)
    assert np.abs(difference).max() <= 1


def test_a_real_model_folder_through_the_engine(tiny: str) -> None:
    request = Request(tiny, (3, 4, 5), "dog", 0.7)
    with Engine("cpu") as eng:
        images = eng.generate(request)
    assert np.array_equal(images, generate_unbatched(prepare(zoo.load(tiny)), request.seeds, "dog", 0.7))


def scaled_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The weights of model ``folder`` with every tensor scaled: another model of the same shape."""
    state = load_file(folder / "model.safetensors")
    return {key: tensor * 1.5 if tensor.is_floating_point() else tensor for key, tensor in state.items()}


def test_a_model_folder_replaced_on_disk_is_drawn_by_the_next_request(home: Path, tiny: str) -> None:
    folder = home / "models" / tiny
    request = Request(tiny, (3, 4), "dog")
    with Engine("cpu") as eng:
        drawn = [eng.generate(request)]
        shas = [eng.model(tiny).weights_sha256]
        # A folder from before version links: its weights file rewritten (atomically) in place.
        state = scaled_weights(folder)
        atomic_write(folder / "model.safetensors", lambda tmp: save_file(state, str(tmp)))
        drawn.append(eng.generate(request))
        shas.append(eng.model(tiny).weights_sha256)
        expected = [generate_unbatched(prepare(zoo.load(tiny)), request.seeds, "dog")]
        # A fine-tune or a pull: a new version folder behind the name's link.
        state = scaled_weights(folder)
        with swap_dir(folder) as version:
            shutil.copy(folder / "config.json", version / "config.json")
            save_file(state, str(version / "model.safetensors"))
        drawn.append(eng.generate(request))
        shas.append(eng.model(tiny).weights_sha256)
        expected.append(generate_unbatched(prepare(zoo.load(tiny)), request.seeds, "dog"))
        assert folder.is_symlink() and eng.cache.names() == [tiny]
    assert len(set(shas)) == 3 and shas[-1] == zoo.load(tiny).weights_sha256  # recipes name the new weights
    for now, before, direct_images in zip(drawn[1:], drawn, expected):
        assert not np.array_equal(now, before)
        assert np.array_equal(now, direct_images)


def test_a_models_config_is_read_once_per_version_of_its_folder(home: Path, tiny: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[str] = []
    read = zoo.model_config
    monkeypatch.setattr(zoo, "model_config", lambda name: reads.append(name) or read(name))
    folder = home / "models" / tiny
    with Engine("cpu") as eng:
        first = eng.config(tiny)
        assert all(eng.config(tiny) is first for _ in range(5)) and reads == [tiny]
        assert first.class_names == CLASSES and eng.cache.names() == []  # the model itself was not loaded
        config = json.loads((folder / "config.json").read_text())
        with swap_dir(folder) as version:
            (version / "config.json").write_text(json.dumps({**config, "title": "Renamed"}))
            shutil.copy(folder / "model.safetensors", version / "model.safetensors")
        assert eng.config(tiny).title == "Renamed" and eng.config(tiny).title == "Renamed"
        assert reads == [tiny, tiny]
        with pytest.raises(zoo.ModelUnavailable, match="^unknown model 'no-such-model'; available: "):
            eng.config("no-such-model")


def test_concurrent_threads_share_forward_passes(engine: Engine, models: TinyZoo) -> None:
    hold_worker(engine, models)
    results: dict[int, np.ndarray] = {}
    submitted = threading.Barrier(13)

    def client(seed: int) -> None:
        future = engine.submit(Request("a", (seed,), "fox"))
        submitted.wait(WAIT)
        results[seed] = future.result(WAIT)

    threads = [threading.Thread(target=client, args=(s,)) for s in range(100, 112)]
    for t in threads:
        t.start()
    submitted.wait(WAIT)
    assert engine.stats()["queue_depth"] == 12
    models.release.set()
    for t in threads:
        t.join(WAIT)
    stats = engine.stats()
    assert (stats["batches"], stats["requests"], stats["images"]) == (2, 13, 13)
    assert stats["mean_batch"] == 6.5 and stats["queue_depth"] == 0
    assert 0 < stats["p50_ms"] <= stats["p95_ms"]
    for seed, image in results.items():
        assert np.array_equal(image, direct(engine, Request("a", (seed,), "fox")))


def test_a_lone_request_does_not_wait_for_company(models: TinyZoo) -> None:
    with Engine("cpu", max_wait_ms=20_000, loader=models.load) as eng:
        eng.generate(Request("a", (1,)))  # loads the model
        start = time.monotonic()
        eng.generate(Request("a", (2,)))
        assert time.monotonic() - start < 5  # far below max_wait_ms


def test_two_models_interleave(models: TinyZoo) -> None:
    with Engine("cpu", max_batch=1, loader=models.load) as eng:
        eng.generate(Request("b", (0,)))  # loaded: a model still loading waits apart (see below)
        models.forwards.clear()
        hold_worker(eng, models, "a")
        flood = [eng.submit(Request("a", (s,))) for s in range(1, 11)]
        other = eng.submit(Request("b", (1,)))
        models.release.set()
        other.result(WAIT)
        for f in flood:
            f.result(WAIT)
    order = [name for name, _ in models.forwards]
    assert order.count("a") == 11 and order.index("b") <= 2  # not after A's backlog of ten


def test_interactive_requests_go_before_background_ones_which_run_one_per_pass(engine: Engine,
                                                                              models: TinyZoo) -> None:
    hold_worker(engine, models)
    frames = [engine.submit(Request("a", z=torch.randn(4, 8), c=torch.eye(3)[[0, 1, 2, 0]], background=True))
              for _ in range(2)]
    clicks = [engine.submit(Request("a", (s,))) for s in (1, 2)]
    models.release.set()
    for f in [*frames, *clicks]:
        f.result(WAIT)
    assert models.forwards == [("a", 1), ("a", 2), ("a", 4), ("a", 4)]


def test_a_background_request_waits_for_interactive_ones_only_so_long(engine: Engine, models: TinyZoo,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "BACKGROUND_MAX_WAIT_S", 0.0)  # every background request is overdue
    hold_worker(engine, models)
    frames = engine.submit(Request("a", z=torch.randn(4, 8), c=torch.eye(3)[[0, 1, 2, 0]], background=True))
    click = engine.submit(Request("a", (1,)))
    models.release.set()
    frames.result(WAIT)
    click.result(WAIT)
    assert models.forwards == [("a", 1), ("a", 5)]  # in order, in one pass


def test_quiet_for_counts_interactive_requests_only(engine: Engine) -> None:
    assert engine.quiet_for() == float("inf")
    engine.generate(Request("a", z=torch.randn(2, 8), c=torch.eye(3)[[0, 1]], background=True))
    assert engine.quiet_for() == float("inf")
    engine.generate(Request("a", (1,)))
    assert 0 <= engine.quiet_for() < WAIT


def test_full_queue_says_busy(models: TinyZoo) -> None:
    with Engine("cpu", max_queue=2, loader=models.load) as eng:
        hold_worker(eng, models)
        queued = [eng.submit(Request("a", (s,))) for s in (1, 2)]
        with pytest.raises(EngineBusy, match="^The studio is busy, try again in a moment.$") as busy:
            eng.submit(Request("a", (3,)))
        assert str(busy.value) == BUSY_MESSAGE == "The studio is busy, try again in a moment."
        models.release.set()
        for f in queued:
            assert f.result(WAIT).shape == (1, 32, 32, 3)
        assert eng.generate(Request("a", (3,))).shape == (1, 32, 32, 3)  # room again


def test_a_failing_model_fails_only_its_own_requests(engine: Engine, models: TinyZoo) -> None:
    models.failing.add("broken")
    hold_worker(engine, models, "good")
    broken = [engine.submit(Request("broken", (s,))) for s in (1, 2)]
    good = [engine.submit(Request("good", (s,))) for s in (1, 2)]
    models.release.set()
    for f in broken:
        with pytest.raises(GenerationError, match="^Generation failed for model broken: boom$"):
            f.result(WAIT)
    for f in good:
        assert f.result(WAIT).shape == (1, 32, 32, 3)
    assert engine.generate(Request("good", (3,))).shape == (1, 32, 32, 3)  # still serving
    with pytest.raises(GenerationError, match="^Generation failed for model broken: boom$"):
        engine.generate(Request("broken", (3,)))


def test_loader_errors_reach_that_models_callers_unchanged(home: Path, tiny: str) -> None:
    with Engine("cpu") as eng:
        missing = eng.submit(Request("no-such-model", (1,)))
        fine = eng.submit(Request(tiny, (1,)))
        with pytest.raises(zoo.ModelUnavailable, match="^unknown model 'no-such-model'; available: ") as error:
            missing.result(WAIT)
        assert fine.result(WAIT).shape == (1, 32, 32, 3)
    with pytest.raises(zoo.ModelUnavailable, match="^unknown model 'no-such-model'; available: ") as expected:
        zoo.load("no-such-model")
    assert str(error.value) == str(expected.value)


def test_a_slow_load_never_holds_up_loaded_models(models: TinyZoo) -> None:
    release = threading.Event()

    def loader(name: str, device: torch.device) -> zoo.LoadedModel:
        if name == "slow":  # a download from a far-away package index, say
            assert release.wait(WAIT)
        return models.load(name, device)

    with Engine("cpu", loader=loader) as eng:
        eng.generate(Request("a", (0,)))
        slow = [eng.submit(Request("slow", (s,))) for s in (1, 2)]
        assert eng.generate(Request("a", (1,)), timeout=WAIT).shape == (1, 32, 32, 3)
        assert not any(f.done() for f in slow)  # still loading, while "a" was served
        release.set()
        assert all(f.result(WAIT).shape == (1, 32, 32, 3) for f in slow)
    assert models.loads == {"a": 1, "slow": 1}


def internal_sizes(*objects: object) -> dict[str, int]:
    """The size of every container attribute of ``objects``: what per-name state would grow."""
    return {f"{type(o).__name__}.{key}": len(value) for o in objects for key, value in vars(o).items()
            if isinstance(value, (dict, set, list, deque))}


def test_unknown_model_names_leave_no_state_behind(home: Path, tiny: str) -> None:
    with Engine("cpu") as eng:
        eng.generate(Request(tiny, (0,)))
        before = internal_sizes(eng, eng.cache)
        names = [f"no-such-model-{i:03d}-" + "x" * 40 for i in range(150)]
        futures = [eng.submit(Request(name, (0,))) for name in names]
        for future in futures:
            with pytest.raises(zoo.ModelUnavailable, match="unknown model"):
                future.result(WAIT)
        for name in names[:20]:  # straight to the cache, as the tabs ask it for a model's details
            with pytest.raises(zoo.ModelUnavailable, match="unknown model"):
                eng.cache.get(name)
        assert internal_sizes(eng, eng.cache) == before
        assert eng.generate(Request(tiny, (1,))).shape == (1, 32, 32, 3)


def test_a_failed_download_is_remembered_not_retried_per_request(home: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "pip.log"  # pip appends to it on every run
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no index from a config file
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens on port 9
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv("PIP_LOG", str(log))
    with Engine("cpu") as eng:
        with pytest.raises(zoo.ModelUnavailable, match="could not download gan-face-generate==1.1.1") as first:
            eng.generate(Request("digiface-faces", (0,)))
        ran = log.read_text()
        assert "127.0.0.1:9" in ran
        for _ in range(3):
            with pytest.raises(zoo.ModelUnavailable, match=r"failed \d+ s ago; the studio tries again in \d+ s"
                               ) as again:
                eng.generate(Request("digiface-faces", (0,)))
            assert str(again.value).startswith(str(first.value))
        assert log.read_text() == ran  # pip did not run again
        eng.cache.retry_after_s = 0  # once the time is up, the next request tries for real
        with pytest.raises(zoo.ModelUnavailable, match="could not download"):
            eng.generate(Request("digiface-faces", (0,)))
        assert len(log.read_text()) > len(ran)


def test_a_bad_request_fails_alone_before_batching(engine: Engine, models: TinyZoo) -> None:
    hold_worker(engine, models)
    bad = engine.submit(Request("a", (1,), "owl"))
    good = engine.submit(Request("a", (2,), "cat"))
    models.release.set()
    with pytest.raises(ValueError, match="unknown class 'owl'"):
        bad.result(WAIT)
    images = good.result(WAIT)
    assert models.forwards[1:] == [("a", 1)]
    assert np.array_equal(images, direct(engine, Request("a", (2,), "cat")))


def test_concurrent_first_requests_load_a_model_once(models: TinyZoo) -> None:
    loads_begun, release = threading.Semaphore(0), threading.Event()

    def slow_load(name: str, device: torch.device) -> zoo.LoadedModel:
        loads_begun.release()
        assert release.wait(WAIT)
        return models.load(name, device)

    cache = ModelCache(slow_load, torch.device("cpu"), budget_bytes=2**30)
    got: list[zoo.LoadedModel] = []
    threads = [threading.Thread(target=lambda: got.append(cache.get("a"))) for _ in range(8)]
    for t in threads:
        t.start()
    assert loads_begun.acquire(timeout=WAIT)
    # The first load is held until a second one begins: without the per-name lock the seven other callers,
    # all running, miss the cache and load too, and this returns at once. With the lock none can, so the
    # wait runs out (the assertion holds however late the others come).
    loads_begun.acquire(timeout=1.0)
    release.set()
    for t in threads:
        t.join(WAIT)
    assert models.loads["a"] == 1 and len(got) == 8 and all(m is got[0] for m in got)


def test_engine_loads_once_under_a_burst(engine: Engine, models: TinyZoo) -> None:
    futures = [engine.submit(Request("a", (s,))) for s in range(10)]
    for f in futures:
        f.result(WAIT)
    assert models.loads == {"a": 1}


def test_cache_evicts_the_least_recently_used_beyond_its_budget(models: TinyZoo) -> None:
    size = model_bytes(models.load("probe", torch.device("cpu")))
    cache = ModelCache(models.load, torch.device("cpu"), budget_bytes=int(2.5 * size))
    for name in ("a", "b", "a", "c"):  # b is now the least recently used
        cache.get(name)
    assert cache.names() == ["a", "c"]
    cache.get("b")
    assert cache.names() == ["c", "b"] and models.loads["b"] == 2 and models.loads["a"] == 1


def test_engine_memory_budget_keeps_one_model_at_least(models: TinyZoo) -> None:
    with Engine("cpu", memory_budget_mb=0.001, loader=models.load) as eng:
        eng.generate(Request("a", (1,)))
        eng.generate(Request("b", (1,)))
        assert eng.cache.names() == ["b"]
        eng.generate(Request("a", (1,)))
    assert models.loads == {"a": 2, "b": 1}


def test_timeouts_give_a_clear_error_and_expired_requests_never_run(models: TinyZoo) -> None:
    with Engine("cpu", timeout_s=0.3, loader=models.load) as eng:
        hold_worker(eng, models)
        expired = eng.submit(Request("a", (1,)))
        with pytest.raises(EngineTimeout, match=r"No images after 0.3 s: the studio is overloaded") as error:
            eng.generate(Request("a", (2,)))  # gives up, and by then `expired` is past its deadline
        assert isinstance(error.value, TimeoutError)
        models.release.set()
        with pytest.raises(EngineTimeout, match=r"^No images after 0.3 s: the studio is overloaded"):
            expired.result(WAIT)
        assert eng.generate(Request("a", (3,))).shape == (1, 32, 32, 3)
    assert models.forwards == [("a", 1), ("a", 1)]  # the held request and the last one only


def test_agenerate_from_asyncio(engine: Engine) -> None:
    requests = [Request("a", (s,), "dog") for s in (5, 6, 7)]

    async def main() -> list[np.ndarray]:
        return await asyncio.gather(*(engine.agenerate(r) for r in requests))

    for request, images in zip(requests, asyncio.run(main())):
        assert np.array_equal(images, direct(engine, request))


def test_out_of_memory_retries_in_halves(engine: Engine, models: TinyZoo) -> None:
    request = Request("a", tuple(range(8)))
    expected = direct(engine, request)
    models.oom_above["a"] = 2
    assert np.array_equal(engine.generate(request), expected)
    assert [n for _, n in models.forwards] == [8, 8, 4, 2, 2, 2, 2]  # direct(), then the engine's tries

    models.oom_above["a"] = 0
    with pytest.raises(GenerationError, match="Generation failed for model a: CUDA out of memory"):
        engine.generate(request)


def test_requests_larger_than_max_batch_run_in_chunks(models: TinyZoo) -> None:
    request = Request("a", tuple(range(10)), "cat")
    with Engine("cpu", max_batch=4, loader=models.load) as eng:
        images = eng.generate(request)
        assert np.array_equal(images, direct(eng, request))
    assert [n for _, n in models.forwards[:3]] == [4, 4, 2]


def test_close_fails_queued_requests_and_refuses_new_ones(models: TinyZoo) -> None:
    eng = Engine("cpu", loader=models.load)
    first = hold_worker(eng, models)
    queued = eng.submit(Request("a", (1,)))
    closer = threading.Thread(target=eng.close)
    closer.start()
    with pytest.raises(EngineClosed, match="^The engine was shut down before this request ran.$"):
        queued.result(WAIT)
    models.release.set()
    closer.join(WAIT)
    assert first.result(WAIT).shape == (1, 32, 32, 3)  # the batch in flight finishes
    with pytest.raises(EngineClosed, match="^The engine is shut down.$"):
        eng.submit(Request("a", (2,)))


def test_studio_device_overrides_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUDIO_DEVICE", "cuda:3")
    assert default_device() == torch.device("cuda:3")
    monkeypatch.setenv("STUDIO_DEVICE", "cpu")
    assert default_device() == torch.device("cpu")


def test_benchmark_reports_every_figure(tiny: str) -> None:
    result = bench.bench_engine(tiny, [1, 2], seconds=0.2, device=torch.device("cpu"))
    assert result["gflop_per_img"] > 0 and result["matmul_gflop_s"] > 0 and result["ceiling_img_s"] > 0
    assert set(result["clients"]) == {"1", "2"}
    keys = {"naive_img_s", "engine_img_s", "naive_p50_ms", "naive_p95_ms", "engine_p50_ms", "engine_p95_ms"}
    for row in result["clients"].values():
        assert set(row) == keys and all(isinstance(v, float) and v > 0 for v in row.values())
    assert "engine/naive" in bench.format_report(result)
