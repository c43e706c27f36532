"""The batched inference engine: queues, micro-batches, devices, precision and the model cache.

``Engine`` is shared by every caller: callers submit requests (``sampling.Request``), one worker
thread per engine gathers the queued requests for one model into a single forward pass and hands
each caller its own images. ``run_generator`` is the single forward pass it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from studio import precision, remix, zoo
from studio.media import to_uint8
from studio.models.folder import CONFIG_FILE, WEIGHTS_FILE, ModelConfig
from studio.bending import bent
from studio.sampling import Inputs, Request, request_inputs
from studio.spaces_gpu import gpu
from studio.zoo import LoadedModel

BUSY_MESSAGE = "The studio is busy, try again in a moment."
DEFAULT_MEMORY_BUDGET_MB = 2048.0
LATENCY_WINDOW = 512  # requests behind the p50/p95 figures of stats()
# A failed built-in download is repeated at once for this long: pip against an unreachable index
# takes a minute or more to give up, and every visitor's request would wait for it again.
DOWNLOAD_RETRY_S = 300.0
# A background request waits at most this long for interactive ones to go first: under a steady
# crowd a long export still moves on.
BACKGROUND_MAX_WAIT_S = 1.0
# Fine-tuned models blended toward their base (the "base <-> fine-tuned" slider) kept in memory: the
# slider's last few stops, so dragging back and forth blends each once. Outside the memory budget.
TUNED_BLENDS_KEPT = 4
PRECISION_MEMO = "precision"  # LoadedModel.memo key of prepare's precision.Choice

Loader = Callable[[str, torch.device], LoadedModel]


class EngineBusy(RuntimeError):
    """The request queue is full; the message is fit to show a user as is."""


class EngineTimeout(TimeoutError):
    """A request got no images within its time limit."""


class EngineClosed(RuntimeError):
    """The engine was closed before (or while) the request could run."""


class GenerationError(RuntimeError):
    """A forward pass failed; every request of that batch gets this error."""


@gpu()
@torch.inference_mode()
def run_generator(model: LoadedModel, inputs: Inputs, dtype: torch.dtype | None = None) -> np.ndarray:
    """One forward pass: drawing latents (and class vectors, noise seeds) -> ``[N, H, W, 3]`` uint8 images.

    Args:
        model: The generator to run.
        inputs: What it draws from.
        dtype: The autocast precision (``precision_of(model).dtype`` for a fast draw); None: exact fp32.
    """
    device = next(model.generator.parameters()).device
    c = None if inputs.c is None else inputs.c.to(device)
    with precision.autocast(device, dtype), bent(model.generator.bendable_layers(), inputs.bends):
        return to_uint8(model.generator.draw(inputs.latents.to(device), c, inputs.noise_seeds))


def generate_unbatched(model: LoadedModel, seeds: Sequence[int], classes: str | Mapping[str, float] | None = None,
                       truncation: float = 1.0, dtype: torch.dtype | None = None) -> np.ndarray:
    """Draw one image per seed in one forward pass, without the engine: ``[N, H, W, 3]`` uint8, in ``dtype``
    autocast (None: fp32)."""
    inputs = request_inputs(model, Request(model.name, tuple(seeds), classes, truncation))
    return run_generator(model, inputs, dtype)


def prepare(model: LoadedModel) -> LoadedModel:
    """Put ``model``'s generator (in place) into the layout the engine runs it in, choose the precision of
    its fast draws (``precision.choose``: capability, then a calibration of about a second where a reduced
    precision is native), and return the model.

    channels_last makes the transposed convolutions faster, on CUDA and on the CPU too (omniart-eyes
    on a 2-core AVX2 CPU: 176 vs 134 img/s at batch 32, 53 vs 46 at batch 1). On the CPU its pixels
    are batch-invariant like the default layout's, but about 1 in 10^5 values differs from the
    default layout's by one level: compare engine output with ``generate_unbatched(prepare(model), ...)``.
    """
    model.generator.to(memory_format=torch.channels_last)
    device = next(model.generator.parameters()).device

    def draw(dtype: torch.dtype | None, n: int) -> np.ndarray:
        return run_generator(model, request_inputs(model, Request(model.name, tuple(range(n)))), dtype)

    model.memo[PRECISION_MEMO] = precision.choose(device, draw)
    return model


def precision_of(model: LoadedModel) -> precision.Choice:
    """The precision ``prepare`` chose for ``model``'s fast draws."""
    return model.memo[PRECISION_MEMO]


def request_dtype(model: LoadedModel, request: Request) -> torch.dtype | None:
    """The autocast precision ``request`` is drawn in on ``model``: the chosen one if it asks for "fast", else fp32."""
    return precision_of(model).dtype if request.precision == "fast" else None


def counters(batches: int, requests: int, images: int, depth: int, latencies: Sequence[float]) -> dict[str, float]:
    """The engine interface's stats counters: passes, requests, images, queue depth and latency p50/p95 (ms)."""
    ms = np.array(latencies) * 1000 if latencies else np.zeros(1)
    return {"batches": batches, "requests": requests, "images": images,
            "mean_batch": images / batches if batches else 0.0, "queue_depth": depth,
            "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95))}


def default_device() -> torch.device:
    """``$STUDIO_DEVICE`` if set, else CUDA when available, else the CPU."""
    name = os.environ.get("STUDIO_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def model_bytes(model: LoadedModel) -> int:
    """Memory held by the generator's parameters and buffers."""
    tensors = [*model.generator.parameters(), *model.generator.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


Identity = tuple[str, int, int, int, int, int, int]  # resolved folder; weights' and config's inode, size, mtime_ns


def folder_identity(folder: Path | None) -> Identity | None:
    """A model folder's identity: its resolved path and its weights' and config's (inode, size, mtime_ns).

    A folder replaced by ``storage.swap_dir`` resolves to another version folder; a file rewritten in
    an older plain folder has a new inode (atomic writes), size or time. One path resolution and two
    ``stat`` calls, cheap enough for every lookup. None when there is nothing on disk to tell apart:
    no folder, or no weights yet (a built-in model not converted yet).
    """
    if folder is None:
        return None
    try:
        resolved = folder.resolve()
        weights, config = (resolved / WEIGHTS_FILE).stat(), (resolved / CONFIG_FILE).stat()
    except (OSError, RuntimeError):  # RuntimeError: a symbolic link loop
        return None
    return (str(resolved), weights.st_ino, weights.st_size, weights.st_mtime_ns,
            config.st_ino, config.st_size, config.st_mtime_ns)


@dataclass(eq=False)
class _Loading:
    """A load in flight: its lock, and how many callers hold or wait for it."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    callers: int = 0


@dataclass(frozen=True, eq=False)
class _Cached:
    """A loaded model, its memory and the identity of the folder it was loaded from."""

    model: LoadedModel
    size: int
    identity: Identity | None


class ModelCache:
    """Loaded models on one device, least recently used first out when over a memory budget.

    Thread-safe: concurrent first requests for one model load it once (a lock per name while it
    loads), while other models load or get served meanwhile. A name leaves no trace unless it
    loaded, or its built-in download failed: that failure is remembered for ``retry_after_s`` and
    repeated at once meanwhile, so an unreachable package index costs one wait, not one per request.
    Each lookup compares the ``folder_identity`` of the folder a model was loaded from with the one
    it had then, so a folder replaced on disk is loaded again by its next request.
    """

    def __init__(self, loader: Loader, device: torch.device, budget_bytes: int,
                 retry_after_s: float = DOWNLOAD_RETRY_S) -> None:
        self._loader = loader
        self._device = device
        self._budget = budget_bytes
        self.retry_after_s = retry_after_s
        self._models: OrderedDict[str, _Cached] = OrderedDict()
        self._configs: dict[str, tuple[Identity | None, ModelConfig]] = {}
        self._lock = threading.Lock()
        self._loading: dict[str, _Loading] = {}
        self._failed: dict[str, tuple[float, zoo.DownloadFailed]] = {}  # name -> (when it failed, why)

    def names(self) -> list[str]:
        """The cached models, least recently used first."""
        with self._lock:
            return list(self._models)

    def loaded(self) -> list[LoadedModel]:
        """The cached models, least recently used first, without touching their order."""
        with self._lock:
            return [entry.model for entry in self._models.values()]

    def config(self, name: str) -> ModelConfig:
        """Model ``name``'s config, without loading the model: read once per identity of its folder.

        Raises:
            zoo.ModelUnavailable: An unknown name.
        """
        identity = folder_identity(zoo.folder_for(name))
        with self._lock:
            cached = self._configs.get(name)
            if cached is not None and cached[0] == identity:
                return cached[1]
        config = zoo.model_config(name)
        with self._lock:
            self._configs[name] = (identity, config)
        return config

    def peek(self, name: str) -> LoadedModel | None:
        """Model ``name`` if loaded from its current folder (now the most recently used), else None; never loads."""
        with self._lock:
            return self._touch(name)

    def get(self, name: str) -> LoadedModel:
        """Model ``name`` on this cache's device, loading it if needed or if its folder was replaced.

        Raises:
            zoo.ModelUnavailable: From the loader, unchanged; or a download failure remembered from
                less than ``retry_after_s`` ago.
        """
        with self._lock:
            if (model := self._touch(name)) is not None:
                return model
            self._raise_if_failed(name)
            loading = self._loading.setdefault(name, _Loading())
            loading.callers += 1
        try:
            with loading.lock:
                with self._lock:  # loaded, or failed, by the thread we waited for
                    if (model := self._touch(name)) is not None:
                        return model
                    self._raise_if_failed(name)
                return self._load(name)
        finally:
            with self._lock:
                loading.callers -= 1
                if not loading.callers:
                    del self._loading[name]

    def _touch(self, name: str) -> LoadedModel | None:
        """With the lock held: the loaded model, marked most recently used; None if not loaded.

        A model whose folder was replaced since it loaded is dropped (None).
        """
        entry = self._models.get(name)
        if entry is None:
            return None
        # The folder the model came from, not the one its name means now: a changed $STUDIO_HOME
        # (tests, benchmarks) does not unload it.
        if folder_identity(entry.model.folder) != entry.identity:
            del self._models[name]
            return None
        self._models.move_to_end(name)
        return entry.model

    def _raise_if_failed(self, name: str) -> None:
        """With the lock held: raise the remembered download failure of ``name``, if still recent."""
        if name not in self._failed:
            return
        when, error = self._failed[name]
        age = time.monotonic() - when
        if age >= self.retry_after_s:
            del self._failed[name]
            return
        raise zoo.ModelUnavailable(f"{error} (this failed {age:.0f} s ago; the studio tries again in "
                                   f"{self.retry_after_s - age:.0f} s)")

    def _load(self, name: str) -> LoadedModel:
        folder = zoo.folder_for(name)
        before = folder_identity(folder)
        try:
            model = prepare(self._loader(name, self._device))
        except zoo.DownloadFailed as e:
            with self._lock:
                self._failed[name] = (time.monotonic(), e)
            raise
        # The identity from before the load, so that a folder replaced while it loaded is loaded
        # again next time; a built-in model's first load writes its folder, which only then has one.
        identity = before if before is not None and model.folder == folder else folder_identity(model.folder)
        with self._lock:
            self._models[name] = _Cached(model, model_bytes(model), identity)
            self._evict()
        return model

    def _evict(self) -> None:
        # The newest model always stays, even alone over budget: it is about to run.
        while len(self._models) > 1 and sum(entry.size for entry in self._models.values()) > self._budget:
            self._models.popitem(last=False)


@dataclass(eq=False)
class _Pending:
    """A submitted request, its future and its time limit."""

    request: Request
    future: Future
    submitted: float
    deadline: float


_WithInputs = tuple[_Pending, Inputs]  # a request and its generator inputs


def _resolve(pending: _Pending, result: np.ndarray | None = None, error: BaseException | None = None) -> None:
    # A caller may have cancelled the future (generate's own timeout); its outcome is then moot.
    with contextlib.suppress(InvalidStateError):
        if error is not None:
            pending.future.set_exception(error)
        else:
            pending.future.set_result(result)


def _generation_error(name: str, cause: Exception) -> GenerationError:
    error = GenerationError(f"Generation failed for model {name}: {cause}")
    error.__cause__ = cause
    return error


class Engine:
    """The batched inference engine: one request queue and one worker thread on one device.

    The worker takes the next model round-robin, gathers its queued requests up to ``max_batch``
    images, runs them as one forward pass and hands each caller its own images. It waits for more
    requests only to match the previous batch's count, and at most ``max_wait_ms`` after the oldest
    arrived: a lone user's request runs at once. A model that is not loaded yet loads on a thread
    of its own, its requests waiting meanwhile, so a slow load or download never holds up the
    other models' requests.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; None: see ``default_device``.
        max_batch: Most images per forward pass (a larger request runs in chunks of this size).
        max_wait_ms: Longest wait for more requests to join a batch.
        max_queue: Most requests waiting; beyond it ``submit`` raises ``EngineBusy``.
        timeout_s: A request not done this long after submission fails with ``EngineTimeout``;
            one still queued by then is dropped, not run.
        memory_budget_mb: Parameter and buffer memory of the models kept loaded; None means
            ``DEFAULT_MEMORY_BUDGET_MB``.
        loader: ``loader(name, device) -> LoadedModel``.
    """

    def __init__(self, device: str | None = None, max_batch: int = 64, max_wait_ms: float = 2.0,
                 max_queue: int = 256, timeout_s: float = 60.0, memory_budget_mb: float | None = None,
                 loader: Loader = zoo.load) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0 or timeout_s <= 0:
            raise ValueError("max_batch and max_queue must be >= 1, max_wait_ms >= 0 and timeout_s > 0")
        self.device = torch.device(device) if device else default_device()
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        budget_mb = DEFAULT_MEMORY_BUDGET_MB if memory_budget_mb is None else memory_budget_mb
        self.cache = ModelCache(loader, self.device, int(budget_mb * 2**20))
        self._cond = threading.Condition()
        self._queues: OrderedDict[str, deque[_Pending]] = OrderedDict()  # round-robin order of models
        self._loading: set[str] = set()  # models loading on their own thread; their queues wait
        self._fresh: dict[str, LoadedModel] = {}  # just loaded: served once even if evicted meanwhile
        self._depth = 0
        self._closed = False
        self._last_batch_requests = 0
        self._batches = 0
        self._images = 0
        self._requests = 0
        self._last_interactive = -float("inf")  # when the last interactive request came (monotonic s)
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        # (model name, alpha) -> (the fine-tuned model, its base, the blend); rebuilt if either was reloaded
        self._blends: OrderedDict[tuple[str, float], tuple[LoadedModel, LoadedModel, LoadedModel]] = OrderedDict()
        self._blends_lock = threading.Lock()
        self._worker = threading.Thread(target=self._serve, name=f"studio-engine-{self.device}", daemon=True)
        self._worker.start()

    # -- callers' side -------------------------------------------------------------------------

    def submit(self, request: Request) -> Future:
        """Queue ``request``; the future resolves to its ``[N, H, W, 3]`` uint8 images.

        Raises:
            EngineBusy: The queue is full.
            EngineClosed: The engine is closed.
        """
        now = time.monotonic()
        pending = _Pending(request, Future(), now, now + self.timeout_s)
        with self._cond:
            if self._closed:
                raise EngineClosed("The engine is shut down.")
            if self._depth >= self.max_queue:
                raise EngineBusy(BUSY_MESSAGE)
            self._queues.setdefault(request.model, deque()).append(pending)
            self._depth += 1
            if not request.background:
                self._last_interactive = now
            self._cond.notify()
        return pending.future

    def generate(self, request: Request, timeout: float | None = None) -> np.ndarray:
        """Draw ``request``'s images, blocking: ``[N, H, W, 3]`` uint8.

        Args:
            request: What to draw.
            timeout: Seconds to wait; None waits the engine's ``timeout_s``.

        Raises:
            EngineBusy, EngineTimeout, GenerationError, zoo.ModelUnavailable, ValueError (a bad request).
        """
        future = self.submit(request)
        limit = self.timeout_s if timeout is None else timeout
        try:
            return future.result(timeout=limit)
        except EngineTimeout:
            raise
        except TimeoutError:
            future.cancel()  # if still queued, it is dropped
            raise self._timeout_error(limit) from None

    async def agenerate(self, request: Request) -> np.ndarray:
        """``generate`` for asyncio code: awaits the images without blocking the event loop.

        A request still queued ``timeout_s`` after submission fails with ``EngineTimeout``.
        """
        return await asyncio.wrap_future(self.submit(request))

    def model(self, name: str, tuned: float | None = None) -> LoadedModel:
        """Model ``name`` as this engine runs it (loaded if needed): its config, folder and weights' hash.

        Args:
            name: The model.
            tuned: For a fine-tuned model, its weights blended from its base's (0) to its own (1), as
                ``Request.tuned`` draws it; None: its own weights.

        Raises:
            zoo.ModelUnavailable: An unknown name, or weights that cannot be read (the base's too).
            ValueError: ``tuned`` given for a model with no base, or one its base cannot blend with.
        """
        model = self.cache.get(name)
        return model if tuned is None else self._toward_tuned(model, tuned)

    def config(self, name: str) -> ModelConfig:
        """Model ``name``'s config without loading it, read from disk once per version of its folder.

        Raises:
            zoo.ModelUnavailable: An unknown name.
        """
        return self.cache.config(name)

    def precision_for(self, name: str) -> precision.Choice:
        """The precision model ``name``'s fast requests are drawn in (loaded if needed), and why.

        Raises:
            zoo.ModelUnavailable: An unknown name, or weights that cannot be read.
        """
        return precision_of(self.cache.get(name))

    def quiet_for(self) -> float:
        """Seconds since the last interactive (not background) request was submitted; inf if none ever was."""
        with self._cond:
            return time.monotonic() - self._last_interactive

    def stats(self) -> dict[str, float | int | str]:
        """Counters since start and latency percentiles (ms) over the last ``LATENCY_WINDOW`` requests."""
        with self._cond:
            return {
                "device": str(self.device),
                **counters(self._batches, self._requests, self._images, self._depth, self._latencies),
                "precision": "; ".join(f"{m.name}: {precision_of(m).reason}" for m in self.cache.loaded())
                or "chosen when a model loads",
            }

    def close(self) -> None:
        """Stop the worker after its current batch; queued requests fail with ``EngineClosed``."""
        with self._cond:
            self._closed = True
            dropped = [p for queue in self._queues.values() for p in queue]
            self._queues.clear()
            self._fresh.clear()
            self._depth = 0
            self._cond.notify_all()
        for pending in dropped:
            _resolve(pending, error=EngineClosed("The engine was shut down before this request ran."))
        if threading.current_thread() is not self._worker:
            self._worker.join()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _timeout_error(self, limit: float) -> EngineTimeout:
        return EngineTimeout(f"No images after {limit:g} s: the studio is overloaded, try again in a moment.")

    # -- the worker ----------------------------------------------------------------------------

    def _serve(self) -> None:
        while (taken := self._next_batch()) is not None:
            model, batch = taken
            try:
                self._run(model, batch)
            except Exception as e:  # a bug here must not stop the engine for everyone
                for pending in batch:
                    _resolve(pending, error=_generation_error(model.name, e))

    def _next_batch(self) -> tuple[LoadedModel, list[_Pending]] | None:
        """Wait for work; return the next loaded model round-robin and its requests for one batch (None: closed)."""
        while True:
            expired: list[_Pending] = []
            with self._cond:
                while not self._closed and (name := self._next_model()) is None:
                    self._cond.wait()
                if self._closed:
                    return None
                model = self._fresh.pop(name, None) or self.cache.peek(name)
                if model is None:
                    self._start_loading(name)
                    continue
                batch = self._gather(name, expired)
            for pending in expired:
                _resolve(pending, error=self._timeout_error(self.timeout_s))
            if batch:
                return model, batch

    def _next_model(self) -> str | None:
        """With the lock held: the first model in round-robin order with requests and not loading."""
        return next((name for name in self._queues if name not in self._loading), None)

    def _start_loading(self, name: str) -> None:
        """With the lock held: load ``name`` on a thread of its own; its requests wait until it is done."""
        self._loading.add(name)
        threading.Thread(target=self._load, args=(name,), name=f"studio-load-{name[:40]}", daemon=True).start()

    def _load(self, name: str) -> None:
        """Load ``name``, then let its requests run; if it cannot load, fail them with the loader's error."""
        try:
            model, error = self.cache.get(name), None
        except Exception as e:  # zoo.ModelUnavailable above all: its message is for the user
            model, error = None, e
        with self._cond:
            self._loading.discard(name)
            failed = self._queues.pop(name, deque()) if error is not None else deque()
            self._depth -= len(failed)
            if model is not None and name in self._queues:
                self._fresh[name] = model
            self._cond.notify_all()
        for pending in failed:
            _resolve(pending, error=error)

    def _gather(self, name: str, expired: list[_Pending]) -> list[_Pending]:
        """With the lock held: model ``name``'s live requests for one pass (see ``_take``)."""
        queue = self._queues[name]
        self._queues.move_to_end(name)  # the next batch goes to the next model: fair interleaving
        batch: list[_Pending] = []
        wait_until = queue[0].submitted + self.max_wait_s
        # The callers of the last batch are likely coming back: wait (briefly) for as many requests
        # as it had, and no longer. So a lone user's request runs at once, while a crowd's first
        # returning caller waits for the others.
        expected = max(1, self._last_batch_requests)
        while True:
            background = self._take(queue, batch, expired)
            images = sum(pending.request.count for pending in batch)
            remaining = wait_until - time.monotonic()
            if (background or len(batch) >= expected or queue or images >= self.max_batch or remaining <= 0
                    or self._closed):
                break
            self._cond.wait(remaining)
        if not queue and self._queues.get(name) is queue:  # close() may have emptied the queues
            del self._queues[name]
        if batch and not background:
            self._last_batch_requests = len(batch)
        return batch

    def _take(self, queue: deque[_Pending], batch: list[_Pending], expired: list[_Pending]) -> bool:
        """With the lock held: move requests from ``queue`` into ``batch``; True if it is a background pass.

        Interactive requests go first, in order, up to ``max_batch`` images. Background requests wait
        while any interactive one does (up to ``BACKGROUND_MAX_WAIT_S``, then they count as
        interactive) and otherwise run one per pass: so an interactive request never waits for more
        than one background request's pass. Cancelled requests are dropped, expired ones go to ``expired``.
        """
        now = time.monotonic()

        def urgent(pending: _Pending) -> bool:
            return not pending.request.background or now - pending.submitted > BACKGROUND_MAX_WAIT_S

        background = not batch and not any(urgent(pending) for pending in queue)
        images = sum(pending.request.count for pending in batch)
        kept: deque[_Pending] = deque()
        while queue:
            pending = queue.popleft()
            if background and batch:
                kept.append(pending)
                continue
            too_many = bool(batch) and images + pending.request.count > self.max_batch
            if not background and (too_many or not urgent(pending)):
                kept.append(pending)
                continue
            self._depth -= 1
            if not pending.future.set_running_or_notify_cancel():
                continue  # cancelled by its caller: drop
            if now > pending.deadline:
                expired.append(pending)
                continue
            batch.append(pending)
            images += pending.request.count
        queue.extend(kept)
        return background

    def _toward_tuned(self, model: LoadedModel, alpha: float) -> LoadedModel:
        """``model`` blended toward its base by ``alpha`` (``remix.toward_tuned``), kept for its next requests."""
        base_name = remix.base_of(model.config)
        if base_name is None:
            raise ValueError(f"{model.name} is not a fine-tuned model: it has no base model to blend toward")
        base = self.cache.get(base_name)
        key = (model.name, float(alpha))
        with self._blends_lock:
            kept = self._blends.get(key)
            if kept is not None and kept[0] is model and kept[1] is base:
                self._blends.move_to_end(key)
                return kept[2]
        blend = remix.toward_tuned(base, model, alpha)
        with self._blends_lock:
            self._blends[key] = (model, base, blend)
            while len(self._blends) > TUNED_BLENDS_KEPT:
                self._blends.popitem(last=False)
        return blend

    def _run(self, model: LoadedModel, batch: list[_Pending]) -> None:
        """Run ``batch``, one forward pass per blend of ``model`` (``Request.tuned``) and precision it asks for.

        Mostly one pass: "fast" and "exact" requests share one where the chosen precision is fp32.
        """
        groups: dict[tuple[float | None, torch.dtype | None], list[_Pending]] = {}
        for pending in batch:
            key = (pending.request.tuned, request_dtype(model, pending.request))
            groups.setdefault(key, []).append(pending)
        for (alpha, dtype), group in groups.items():
            try:
                drawn = model if alpha is None else self._toward_tuned(model, alpha)
            except Exception as e:  # no base, or a base that cannot load: these requests fail, in words
                for pending in group:
                    _resolve(pending, error=e)
                continue
            self._run_pass(drawn, group, dtype)

    def _run_pass(self, model: LoadedModel, batch: list[_Pending], dtype: torch.dtype | None) -> None:
        """Run ``batch`` as one forward pass of ``model`` in ``dtype`` (None: fp32) and hand out the images."""
        inputs = self._inputs(model, batch)
        if not inputs:
            return
        live = [pending for pending, _ in inputs]
        batch_inputs = Inputs.cat([one for _, one in inputs])
        try:
            images = self._forward(model, batch_inputs, dtype)
        except Exception as e:
            for pending in live:
                _resolve(pending, error=_generation_error(model.name, e))
            return
        done = time.monotonic()
        with self._cond:
            self._batches += 1
            self._requests += len(live)
            self._images += len(batch_inputs)
            self._latencies.extend(done - p.submitted for p in live)
        start = 0
        for pending in live:
            n = pending.request.count
            _resolve(pending, images[start : start + n])
            start += n

    def _inputs(self, model: LoadedModel, batch: list[_Pending]) -> list[_WithInputs]:
        """Each request with its inputs; a bad request (unknown class...) fails alone, left out."""
        inputs = []
        for pending in batch:
            try:
                inputs.append((pending, request_inputs(model, pending.request)))
            except Exception as e:
                _resolve(pending, error=e)
        return inputs

    def _forward(self, model: LoadedModel, inputs: Inputs, dtype: torch.dtype | None) -> np.ndarray:
        """Images for all of ``inputs`` in passes of at most ``max_batch``, halving them on CUDA out-of-memory."""
        chunk = self.max_batch
        while True:
            try:
                return np.concatenate([
                    run_generator(model, inputs[i : i + chunk], dtype) for i in range(0, max(len(inputs), 1), chunk)
                ])
            except torch.cuda.OutOfMemoryError:
                if chunk == 1:
                    raise
                chunk = max(1, min(chunk, len(inputs)) // 2)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
