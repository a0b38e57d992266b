"""The model a query node serves: loaded in the background, its LoRA adapter hot-swapped.

Loading: on activation a worker thread loads the base model (``rls3_ros.vlm.answers.load_model``)
and the wanted adapter, retrying every ``load_retry_period`` s while the model cannot be loaded;
queries answer "model not ready" meanwhile.

Hot swap: a new adapter is loaded into a *new* model instance off the query path, then the model
reference is replaced under a lock. Queries in flight finish on the old instance, later ones use
the new one: no query fails during a swap. The swap callbacks (``~/set_adapter``, ``adapter``
announcements) are coroutines that run the load on a worker thread and await it
(``await_off_executor``), so the executor keeps answering queries (on the old adapter) while an
adapter loads. ``swap_mode`` "reload" builds the instance fresh from the spec, "copy" deep-copies
the current one (falling back to reload).

Adapters from the network: a ROS 2 domain without SROS2 authenticates nobody, so a path from
``~/set_adapter`` or an ``adapter`` announcement is checked before any work
(``rls3_ros.vlm.adapter_trust``): it must resolve (symlinks, ``..``) to a directory inside
``adapter_roots`` (a missing and a forbidden path get the same refusal, which never tells whether
a path exists); ``rls3_adapter.json`` must record the served base's fingerprint (an adapter of
another base, e.g. announced by a trainer of another model, is refused and the node serves on);
files read must be regular files (a FIFO, device or symlink is refused without being opened for a
blocking read) within size caps (``max_adapter_mb``); ``adapter_config.json`` must be a plain LoRA
config (rank <= ``max_adapter_rank``, finite alpha, target modules of the served model, no option
that selects code or heavy work); weights only as safetensors (never a pickle). The checked files
are copied to a private directory and loaded from there, by a worker thread given
``adapter_load_timeout`` s: a stuck read answers with a timeout reason while queries go on.
"""

from __future__ import annotations

import copy
import gc
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Tuple

from rclpy.task import Future

from rls3_ros.vlm.adapter_trust import (
    AdapterLimits,
    AdapterPolicy,
    AdapterRefused,
    BaseIdentity,
    StagedAdapter,
    base_identity,
    load_staged,
    parse_roots,
    refusal_reason,
    stage_adapter_bounded,
)
from rls3_ros.vlm.answers import load_model
from rls3_ros.vlm.interface import SpatialVLM


@dataclass
class LoadedModel:
    """A model instance with its own inference lock (queries on one instance are serialised)."""

    model: SpatialVLM
    adapter: str
    lock: threading.Lock = field(default_factory=threading.Lock)


def shown(path: str) -> str:
    """A requested path for messages and logs (repr, cut at 200 characters)."""
    path = str(path)
    return repr(path) if len(path) <= 200 else repr(path[:200]) + "..."


async def await_off_executor(node, fn, *args):
    """``fn(*args)`` on a worker thread, awaited: the executor serves other callbacks (queries)
    while this coroutine is suspended. The worker wakes the executor when done (an awaited rclpy
    Future is only polled when the executor wakes up)."""
    done: Future = Future()
    executor = node.executor

    def work() -> None:
        try:
            done.set_result(fn(*args))
        except BaseException as e:  # noqa: BLE001 - re-raised in the awaiting coroutine
            done.set_exception(e)
        if executor is not None:
            try:
                executor.wake()
            except Exception:  # noqa: BLE001 - executor shut down meanwhile
                pass

    threading.Thread(target=work, daemon=True, name="adapter-swap").start()
    return await done


class ServedModel:
    """The served model instance and its adapter: background loading, checked hot swaps.

    ``param(name)`` reads the node's current parameter values (``load_retry_period``,
    ``swap_mode``, ``adapter_load_timeout``); ``logger`` is the node's. ``spec`` is read once at
    start: a ``py:`` spec runs code and only comes from the operator."""

    def __init__(self, spec: str, param: Callable[[str], Any], logger) -> None:
        self.spec, self._p, self.log = spec, param, logger
        self._start_cwd = os.getcwd()
        self._policy: Optional[AdapterPolicy] = None  # built on configure
        self._base: Optional[BaseIdentity] = None  # the served base (adapters must record it)
        self._lock = threading.Lock()  # guards self._loaded (the reference swap) and self._wanted
        self._loaded: Optional[LoadedModel] = None
        self._wanted = ""  # adapter to load with the model (activation, announcements before ready)
        self.active = False
        self.status = "not loaded (node not active)"
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def configure(self, roots, startup_adapter: str, max_rank: int, max_mb: int) -> List[str]:
        """Build the adapter policy (roots resolved against the working directory at start, plus
        the start-up adapter itself); the errors, if any."""
        try:
            roots = list(parse_roots(roots))
            if startup_adapter.strip():
                roots.append(os.path.join(self._start_cwd, startup_adapter.strip()))
            limits = AdapterLimits(max_rank=int(max_rank), max_weights_bytes=int(max_mb) << 20)
            self._policy = AdapterPolicy.for_roots(roots, base_dir=self._start_cwd, limits=limits)
        except (ValueError, TypeError) as e:
            return [str(e)]
        return []

    def current(self) -> Optional[LoadedModel]:
        with self._lock:
            return self._loaded

    def _stage(self, path: str) -> StagedAdapter:
        """The checked, staged copy of adapter ``path`` (AdapterRefused with a reason otherwise)."""
        if self._policy is None:
            raise AdapterRefused("node not configured: no adapter roots")
        return stage_adapter_bounded(path, self._policy, self._base, float(self._p("adapter_load_timeout")))

    # -- loading ---------------------------------------------------------------------------
    def start(self, adapter: str) -> None:
        """Activate: load the model with ``adapter`` on a background thread (retried until it works)."""
        self.active = True
        with self._lock:
            self._wanted = adapter.strip()
        self.stop()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._load_loop, args=(self._stop,), daemon=True, name="vlm-loader")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=30.0)
        self._thread = None

    def free(self) -> None:
        """Deactivate: stop loading, drop the model."""
        self.active = False
        self.stop()
        with self._lock:
            self._loaded = None
        self.status = "not loaded (node not active)"
        gc.collect()

    def _load_loop(self, stop: threading.Event) -> None:
        spec = self.spec
        period = float(self._p("load_retry_period"))
        attempt = 0
        while not stop.is_set():
            attempt += 1
            self.status = f"loading model {spec!r} (attempt {attempt})"
            t0 = time.monotonic()
            try:
                model = load_model(spec)
                self._base = base_identity(model)  # before any adapter: what announced adapters must fit
            except Exception as e:  # noqa: BLE001 - any failure: report and retry
                self.status = (f"model {spec!r} not available (attempt {attempt}: {type(e).__name__}: {e}); "
                               f"retrying every {period:.1f} s")
                self.log.warning(self.status)
                stop.wait(period)
                continue
            while not stop.is_set():
                with self._lock:
                    want = self._wanted
                active = ""
                if want:
                    try:
                        with self._stage(want) as staged:
                            active = load_staged(model, staged)
                    except Exception as e:  # noqa: BLE001
                        model.reset_adapter()
                        self.log.error(f"adapter {shown(want)} not loaded ({refusal_reason(e)}); serving the base model")
                with self._lock:
                    if self._wanted != want:  # an announcement arrived meanwhile
                        continue
                    if stop.is_set():
                        return
                    self._loaded = LoadedModel(model, active)
                self.status = "ready"
                self.log.info(f"model ready: model={spec!r} adapter={active!r} ({time.monotonic() - t0:.2f} s, "
                              f"attempt {attempt})")
                return

    # -- swaps -----------------------------------------------------------------------------
    def want_if_loading(self, path: str) -> bool:
        """Record ``path`` as the adapter to load with the model when none is loaded yet (True then)."""
        with self._lock:
            if self._loaded is None:
                self._wanted = path
                return True
        return False

    def _build_swapped(self, current: LoadedModel, staged: Optional[StagedAdapter]) -> SpatialVLM:
        """A new model instance with the checked adapter ``staged`` (None = base), built off the query path."""
        if self._p("swap_mode") == "copy":
            try:
                with current.lock:
                    new = copy.deepcopy(current.model)
                new.reset_adapter()
                if staged is not None:
                    load_staged(new, staged)
                return new
            except AdapterRefused:
                raise
            except Exception as e:  # noqa: BLE001 - fall back to a fresh instance
                self.log.warning(f"swap by copy failed ({type(e).__name__}: {e}); reloading the model")
        new = load_model(self.spec)
        if staged is not None:
            load_staged(new, staged)
        return new

    def swap(self, path: str) -> Tuple[bool, str, str]:
        """(success, message, active adapter) of switching to ``path``; the old model stays on failure."""
        current = self.current()
        if not self.active:
            return False, "node is not active", ""
        if current is None:
            return False, f"model not ready: {self.status}", ""
        path = path.strip()
        t0 = time.monotonic()
        staged = None
        try:
            if path:  # every check (roots, files, limits, base) before any work, the read bounded in time
                staged = self._stage(path)
            new = self._build_swapped(current, staged)
        except AdapterRefused as e:
            return False, f"adapter {shown(path)} refused: {e}; kept adapter {current.adapter!r}", current.adapter
        except Exception as e:  # noqa: BLE001
            return (False, f"cannot load adapter {shown(path)}: {refusal_reason(e)}; kept adapter {current.adapter!r}",
                    current.adapter)
        finally:
            if staged is not None:
                staged.cleanup()
        active = staged.source if staged is not None else ""
        with self._lock:
            if not self.active:
                return False, "node was deactivated during the swap", ""
            self._loaded = LoadedModel(new, active)
        self.log.info(f"adapter switched: {current.adapter!r} -> {active!r} ({time.monotonic() - t0:.2f} s)")
        return True, f"adapter {active!r} active", active
