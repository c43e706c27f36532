"""The engine on Ray Serve: the local engine's interface, with inference spread over N replicas.

``RayEngine`` offers what ``engine.Engine`` offers (submit, generate, agenerate, model, config,
quiet_for, stats, close), so every tab, the command line and the API run unchanged on it. Inference
runs in the ``Replica`` deployment: each replica holds a local ``Engine`` (its own model cache with the
same LRU budget, models loaded on demand) and ``@serve.batch`` hands it the requests that arrived
together, which it draws in one pass. Replies are uint8 arrays, tagged with the replica that drew them.

A request lost with its replica (its process died; Serve starts a new one) fails with the studio's
busy message, like a full queue: never silently, never hanging past ``timeout_s``.

Only the ``serve --ray`` command and ``bench engine --backend ray`` import this module: Ray is an
optional install (requirements-scale.txt).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import ray
import torch
from ray import serve
from ray._private import ray_constants
from ray.exceptions import RayActorError, RayError, RayTaskError
from ray.serve.config import ProxyLocation
from ray.serve.exceptions import RayServeException

from studio.engine import (
    BUSY_MESSAGE, LATENCY_WINDOW, Engine, EngineBusy, EngineClosed, GenerationError, counters,
)
from studio import precision
from studio.models.folder import ModelConfig
from studio.precision import Choice
from studio.sampling import Request
from studio.storage import studio_home
from studio.zoo import LoadedModel

APP_NAME = "gan-studio"
MAX_SERVE_BATCH = 64  # requests per @serve.batch call; the replica's engine splits passes by images
BATCH_WAIT_S = 0.002  # as long as the local engine waits for a batch to fill
OBJECT_STORE_BYTES = 256 * 2**20  # replies are a few MB at most; Ray's default takes 30% of the memory
HEALTH_CHECK_S = 2.0  # a dead replica is noticed, and replaced, within seconds
FORWARDED_ENV = (precision.ENV,)  # settings a replica on another machine takes from the front end's
SINGLE_MACHINE_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray on this machine only, on loopback

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reply:
    """One request's outcome from a replica.

    Attributes:
        images: ``[N, H, W, 3]`` uint8, or None when the request failed.
        error: Why it failed (a bad request, an unknown model...), raised again in the front end.
        replica: Which replica answered: ``host:pid``.
        batch: The replica's number for the ``@serve.batch`` call the request was drawn in.
        engine: The replica's ``Engine.stats()`` after that batch (its device, precision...).
    """

    images: np.ndarray | None
    error: Exception | None
    replica: str
    batch: int
    engine: dict


@serve.deployment(max_ongoing_requests=2 * MAX_SERVE_BATCH, health_check_period_s=HEALTH_CHECK_S)
class Replica:
    """A Serve replica: a local engine on this replica's device (a GPU when Ray gave it one)."""

    def __init__(self, max_batch: int, timeout_s: float, memory_budget_mb: float | None) -> None:
        # Torch would use every core of the machine; a CPU replica gets the cores Ray gave it.
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
        torch.set_num_threads(max(1, int(cpus)))
        self.engine = Engine(max_batch=max_batch, timeout_s=timeout_s, memory_budget_mb=memory_budget_mb)
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.batches = 0

    @serve.batch(max_batch_size=MAX_SERVE_BATCH, batch_wait_timeout_s=BATCH_WAIT_S)
    async def draw(self, requests: list[Request]) -> list[Reply]:
        """Draw the requests of one batch through the local engine; each gets its own reply."""
        self.batches += 1
        # Submitted together, so the engine's worker gathers them into one pass per model.
        outcomes = await asyncio.gather(*(self.engine.agenerate(r) for r in requests), return_exceptions=True)
        stats = self.engine.stats()
        return [Reply(None, o, self.name, self.batches, stats) if isinstance(o, Exception)
                else Reply(o, None, self.name, self.batches, stats) for o in outcomes]

    def precision_for(self, name: str) -> Choice:
        """``Engine.precision_for`` on this replica's device."""
        return self.engine.precision_for(name)


def connect(address: str | None, replicas: int) -> bool:
    """Connect to the Ray cluster at ``address``, or start a local one on loopback; True if started here.

    The local one runs no dashboard and a small object store, and offers at least one CPU per replica
    so that more replicas than cores still start (they then share the cores).
    """
    if ray.is_initialized():
        return False
    if address:
        # Other machines get the studio's source and home from here (the home on a shared file system).
        env_vars = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
        runtime_env = {"py_modules": [os.path.dirname(os.path.abspath(__file__))],
                       "env_vars": {**env_vars, "STUDIO_HOME": str(studio_home())}}
        ray.init(address=address, runtime_env=runtime_env, logging_level=logging.WARNING)
        return False
    # Ray binds to loopback only in its single-machine mode (its default on macOS and Windows): a node
    # address of 127.0.0.1 alone is replaced by the machine's address. Ray read the switch when this process
    # imported it; its own processes read it from the environment.
    os.environ[SINGLE_MACHINE_SWITCH] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    # Local workers inherit this process's environment and find the studio as it does.
    ray.init(address="local", num_cpus=max(os.cpu_count() or 1, replicas), include_dashboard=False,
             object_store_memory=OBJECT_STORE_BYTES, logging_level=logging.WARNING)
    return True


def replica_resources(replicas: int) -> dict[str, float]:
    """Each replica's Ray resources: one GPU where the cluster has GPUs, else an equal share of the cores."""
    if ray.cluster_resources().get("GPU", 0) >= 1:
        return {"num_gpus": 1, "num_cpus": 1}
    return {"num_cpus": max(1, int(ray.cluster_resources().get("CPU", 1)) // replicas)}


class RayEngine:
    """The engine's interface, served by ``replicas`` replicas of a Ray Serve deployment.

    Args:
        replicas: How many replicas (one GPU each where the cluster has GPUs).
        address: A Ray cluster to join (``ray start --head`` printed it); None starts one here on loopback.
        max_batch: Most images per forward pass in a replica.
        max_queue: Most requests in flight; beyond it ``submit`` raises ``EngineBusy``.
        timeout_s: A request not answered this long after submission fails with ``EngineTimeout``.
        memory_budget_mb: Memory of the models each replica (and the front end) keeps loaded.
    """

    def __init__(self, replicas: int = 1, address: str | None = None, max_batch: int = 64, max_queue: int = 256,
                 timeout_s: float = 60.0, memory_budget_mb: float | None = None) -> None:
        if replicas < 1 or max_queue < 1 or timeout_s <= 0:
            raise ValueError("replicas and max_queue must be >= 1 and timeout_s > 0")
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self._started_ray = connect(address, replicas)
        resources = replica_resources(replicas)
        self.device = f"ray: {replicas} {'GPU' if 'num_gpus' in resources else 'CPU'} replicas"
        serve.start(proxy_location=ProxyLocation.Disabled)  # the Gradio front end is the only way in
        app = Replica.options(num_replicas=replicas, ray_actor_options=resources).bind(
            max_batch, timeout_s, memory_budget_mb)
        # One access-log line per image would drown the studio's own output.
        self._handle = serve.run(app, name=APP_NAME, route_prefix=None, logging_config={"enable_access_log": False})
        # Configs, folders, weights' hashes and blends (and projection's model) come from a local engine
        # on the CPU here, which draws nothing.
        self._local = Engine("cpu", memory_budget_mb=memory_budget_mb)
        self._lock = threading.Lock()
        self._closed = False
        self._depth = 0
        self._requests = 0
        self._images = 0
        self._batches = 0
        self._last_batch: dict[str, int] = {}  # replica -> the batch number of its latest reply
        self._served: dict[str, int] = {}  # replica -> images it drew
        self._replica_stats: dict = {}  # the latest reply's replica engine stats
        self._last_interactive = -float("inf")
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        # Replies are awaited on one event loop of our own, so a waiting request holds no thread.
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="studio-ray-replies", daemon=True)
        self._thread.start()

    def submit(self, request: Request) -> Future:
        """Send ``request`` to a replica; the future resolves to its ``[N, H, W, 3]`` uint8 images.

        Raises:
            EngineBusy: ``max_queue`` requests are in flight.
            EngineClosed: The engine is closed.
        """
        now = time.monotonic()
        with self._lock:
            if self._closed:
                raise EngineClosed("The engine is shut down.")
            if self._depth >= self.max_queue:
                raise EngineBusy(BUSY_MESSAGE)
            self._depth += 1
            if not request.background:
                self._last_interactive = now
        return asyncio.run_coroutine_threadsafe(self._draw(request, now), self._loop)

    # Waiting is the local engine's own: on ``submit``, ``timeout_s`` and ``_timeout_error``.
    generate = Engine.generate
    agenerate = Engine.agenerate
    _timeout_error = Engine._timeout_error

    def model(self, name: str, tuned: float | None = None) -> LoadedModel:
        """Model ``name`` as the replicas run it, loaded on the CPU here (see ``Engine.model``)."""
        return self._local.model(name, tuned)

    def config(self, name: str) -> ModelConfig:
        """Model ``name``'s config without loading it (see ``Engine.config``)."""
        return self._local.config(name)

    def precision_for(self, name: str) -> Choice:
        """The precision a replica draws model ``name``'s fast requests in (loaded there if needed), and why.

        Raises:
            zoo.ModelUnavailable: An unknown name, or weights that cannot be read.
            EngineBusy: No replica answered.
        """
        try:
            return self._handle.precision_for.remote(name).result(timeout_s=self.timeout_s)
        except (RayError, RayServeException, TimeoutError) as e:
            if isinstance(e, RayTaskError) and not isinstance(e, RayActorError):
                raise e.as_instanceof_cause() from None  # the replica's own error: an unknown model...
            raise _busy(e) from e

    def quiet_for(self) -> float:
        """Seconds since the last interactive (not background) request was submitted; inf if none ever was."""
        with self._lock:
            return time.monotonic() - self._last_interactive

    def stats(self) -> dict[str, float | int | str | dict[str, int]]:
        """``Engine.stats``: the latest replica's (its precision...) with the counters seen from the front end, plus
        ``replicas``: images drawn by each replica."""
        with self._lock:
            base = self._replica_stats
        base = base or self._local.stats()  # before any reply: the keys, told by the front end's own engine
        with self._lock:
            return {
                **base,
                "device": f"{self.device} ({base['device']})" if self._replica_stats else self.device,
                **counters(self._batches, self._requests, self._images, self._depth, self._latencies),
                "replicas": dict(self._served),
            }

    def close(self) -> None:
        """Fail the requests in flight with ``EngineClosed``, remove the deployment, leave Ray."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        asyncio.run_coroutine_threadsafe(_cancel_all(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._local.close()
        serve.delete(APP_NAME)
        if self._started_ray:
            serve.shutdown()
            ray.shutdown()

    def __enter__(self) -> RayEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def _draw(self, request: Request, submitted: float) -> np.ndarray:
        """One request's round trip to a replica, its failures put in the studio's words."""
        try:
            reply: Reply = await asyncio.wait_for(self._handle.draw.remote(request), self.timeout_s)
        except TimeoutError:
            raise self._timeout_error(self.timeout_s) from None
        except asyncio.CancelledError:
            if self._closed:
                raise EngineClosed("The engine was shut down before this request was answered.") from None
            raise
        except RayActorError as e:  # the replica died with the request in it
            raise _busy(e) from e
        except RayTaskError as e:  # the replica's code failed outside the engine, whose errors come in the reply
            raise GenerationError(f"Generation failed for model {request.model}: {e}") from e
        except (RayError, RayServeException) as e:  # no replica could take it (none up yet, a node lost...)
            raise _busy(e) from e
        finally:
            with self._lock:
                self._depth -= 1
        self._record(reply, submitted)
        if reply.error is not None:
            raise reply.error
        return reply.images

    def _record(self, reply: Reply, submitted: float) -> None:
        with self._lock:
            self._requests += 1
            self._latencies.append(time.monotonic() - submitted)
            self._replica_stats = reply.engine
            if reply.images is None:
                return
            self._images += len(reply.images)
            self._served[reply.replica] = self._served.get(reply.replica, 0) + len(reply.images)
            if self._last_batch.get(reply.replica) != reply.batch:
                self._last_batch[reply.replica] = reply.batch
                self._batches += 1


async def _cancel_all() -> None:
    """Cancel every other task on the running loop and wait until they are done."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _busy(cause: Exception) -> EngineBusy:
    log.warning("a request was refused as busy: %s", cause)  # the cause is told here, the user gets the busy message
    return EngineBusy(BUSY_MESSAGE)
