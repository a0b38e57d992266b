"""Background fine-tuning: the thread that fine-tunes and evaluates a second copy of the VLM while the
agent samples (the in-process loop's ``run.overlap_fine_tune``; pure Python, no ROS).

:class:`BackgroundFineTunes` is the part of :class:`rls3_ros.loop.scheduler.Scheduler` that owns the
thread: the E-th episode starts a fine-tune here (:meth:`~BackgroundFineTunes._start_background`), and
the scheduler *lands* it (:meth:`~BackgroundFineTunes.land`) a fixed number of episodes later, waiting
for the thread if it has not finished, so which adapter scores which episode does not depend on
thread timing. One fine-tune is in flight at most.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

from rls3_ros.core.scene import Sample


@dataclass
class InFlight:
    """A background fine-tune: its inputs, and its result once the thread is done."""

    iteration: int
    batch: List[Sample]
    replay: List[Sample]
    counts: Dict[str, int] = field(default_factory=dict)  # episodes, steps, renders, valid samples at its start
    earlier: List[Sample] = field(default_factory=list)  # cumulative: earlier batches, trained on again
    thread: Optional[threading.Thread] = None
    result: Optional[tuple] = None
    error: Optional[BaseException] = None

    def state(self) -> tuple:
        """What a checkpoint keeps of it (the fine-tune runs again on resume)."""
        return self.iteration, list(self.batch), list(self.replay), dict(self.counts), list(self.earlier)


class BackgroundFineTunes:
    """Starts and lands background fine-tunes (a base of the scheduler, which provides ``lock``,
    ``_counts``, ``_train_and_evaluate`` and ``_record_fine_tune``)."""

    _inflight: Optional[InFlight] = None
    on_adapter: Optional[Callable[[str], None]] = None  # the scoring copy loads a landed iteration's adapter

    def _start_background(self, iteration: int, batch: List[Sample], replay: List[Sample],
                          counts: Optional[Dict[str, int]] = None, earlier: Sequence[Sample] = ()) -> None:
        job = InFlight(iteration, batch, replay, dict(counts or self._counts()), list(earlier))

        def work():
            try:
                job.result = self._train_and_evaluate(iteration, batch, replay, job.earlier)
            except BaseException as e:  # noqa: BLE001 - re-raised when it lands
                job.error = e

        job.thread = threading.Thread(target=work, name=f"rls3-fine-tune-{iteration}", daemon=True)
        self._inflight = job
        job.thread.start()

    def land(self, wait: bool = True):
        """Record the background fine-tune if it has finished (``wait``: wait for it first); its
        :class:`~rls3_ros.loop.loop_counters.IterationInfo`, or None when none landed."""
        with self.lock:
            job = self._inflight
            if job is None or (not wait and job.thread.is_alive()):
                return None
            t0 = time.monotonic()
            job.thread.join()
            self.wait_s += time.monotonic() - t0
            self._inflight = None
            if job.error is not None:
                raise RuntimeError(f"background fine-tune {job.iteration} failed: {job.error}") from job.error
            out = job.result[0]
            if self.on_adapter is not None and out.adapter_path:
                self.on_adapter(out.adapter_path)
            return self._record_fine_tune(job.iteration, job.batch, job.replay, *job.result, counts=job.counts,
                                          earlier=len(job.earlier))

    def finish(self) -> None:
        """Land a fine-tune still in flight (call when the agent stops)."""
        self.land(wait=True)
