"""Run directories: ``runs/<timestamp>/`` with config, metrics, TensorBoard, adapters, checkpoints.

Layout::

    runs/<ts>/config.yaml          the configuration used (resume reads it back)
    runs/<ts>/metrics.jsonl        one JSON line per episode ("type": "episode") and per
                                   fine-tuning iteration ("type": "iteration", 0 = base model)
    runs/<ts>/tb/                  TensorBoard events (x axis: episodes)
    runs/<ts>/adapters/iter_NNN/   LoRA adapter after each fine-tune (peft format)
    runs/<ts>/checkpoints/ckpt-NNN/  scheduler + envs + agent state after fine-tune NNN
    runs/<ts>/checkpoints/LATEST   name of the newest complete checkpoint (atomic replace)
    runs/<ts>/test_accuracy.png    test accuracy vs generated samples (overall + per term)
    runs/<ts>/report.md            tuned model vs base

Crash safety. A checkpoint is written into a hidden temporary directory, every file and directory
in it fsynced, renamed into place (``rls3_ros.core.atomic_io``), then ``LATEST`` is replaced the same
way; ``metrics.jsonl`` is fsynced first (a checkpoint records its size). A crash or a power loss
at any point leaves the previous checkpoint usable. Leftovers of a killed save (``.*.tmp-*``,
``.*.old-*``, ``.*.del-*`` in ``checkpoints/`` and ``adapters/``) are removed at the next save or
resume of the run (only ours: owned by this user and older than this process). A full disk while
saving raises :class:`~rls3_ros.core.atomic_io.DiskFullError` (one line) and changes nothing.

Trust boundary. A checkpoint holds only formats that cannot execute code when read: JSON, numpy
``.npz`` read with ``allow_pickle=False`` (``rls3_ros.core.safe_state``), and the adapter's peft
safetensors; the SB3 agents are stored the same way (``rls3_ros.loop.agents``), never as pickles.
``MANIFEST.json`` (written last, inside the checkpoint) holds the SHA-256 and size of every file of
the checkpoint and of its adapter; resume checks it before reading anything, and refuses a run
directory or checkpoint not owned by the current user or writable by others. Resume takes the
newest checkpoint that verifies and loads, saying in one line which ones it skipped and why; none
loads: :class:`CheckpointError` (one line, ``rls3 train`` exits 2). Run directories of earlier
versions (``scheduler.pkl``, ``envs.pkl``, SB3 ``model.zip``: pickles) are refused, never loaded.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import yaml

from rls3_ros.core.atomic_io import (DiskFullError, append_line, atomic_dir, atomic_write_text, clean_stale,
                                     fsync_file, remove_tree)
from rls3_ros.core.safe_state import StateError, dump_state, load_state
from rls3_ros.loop.scheduler import IterationInfo, Scheduler, SchedulerCallbacks

CHECKPOINT_FORMAT = 2
MANIFEST = "MANIFEST.json"
LEGACY_FILES = ("scheduler.pkl", "envs.pkl", "agent/model.zip", "agent/replay_buffer.pkl", "agent/rng.pkl",
                "agent/mode_sampler.pkl")
_CKPT_RE = re.compile(r"^ckpt-(\d+)$")


class CheckpointError(ValueError):
    """A checkpoint (or a run directory) that is not resumed from; ``str()`` is a one-line reason."""


def new_run_dir(root: str = "runs") -> str:
    ts = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    path = os.path.join(root, ts)
    n = 1
    while os.path.exists(path):
        n += 1
        path = os.path.join(root, f"{ts}-{n}")
    os.makedirs(path)
    return path


def _json_default(o):
    if isinstance(o, float) and math.isnan(o):
        return None
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def _clean(o):
    if isinstance(o, float) and (math.isnan(o) or math.isinf(o)):
        return None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def write_yaml(path: str, data: Dict[str, Any]) -> None:
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))


def read_yaml(path: str) -> Dict[str, Any]:
    with open(path) as f:
        return yaml.safe_load(f) or {}


# ------------------------------------------------------------------------------ manifests
def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _tree_files(root: str) -> List[str]:
    out = []
    for d, dirs, files in os.walk(root):
        dirs.sort()
        for f in sorted(files):
            out.append(os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/"))
    return out


def _hash_tree(root: str, skip: Sequence[str] = ()) -> Dict[str, Dict[str, Any]]:
    return {rel: {"sha256": sha256_file(os.path.join(root, rel)), "size": os.path.getsize(os.path.join(root, rel))}
            for rel in _tree_files(root) if rel not in skip}


def _check_files(root: str, files: Any, what: str) -> None:
    """Every file of ``files`` (rel -> {sha256, size}) is in ``root`` with that size and hash."""
    if not isinstance(files, dict) or not files:
        raise CheckpointError(f"{MANIFEST} lists no {what} files")
    for rel, want in sorted(files.items()):
        if not isinstance(rel, str) or not isinstance(want, dict) or rel.startswith("/") or ".." in rel.split("/"):
            raise CheckpointError(f"{MANIFEST} is malformed ({what} entry {rel!r})")
        p = os.path.join(root, rel)
        label = rel if what == "checkpoint" else f"{what}/{rel}"
        try:
            st = os.lstat(p)
        except OSError:
            raise CheckpointError(f"{label} is missing") from None
        if not stat.S_ISREG(st.st_mode):
            raise CheckpointError(f"{label} is not a regular file")
        _check_owner(p, st)
        size = want.get("size")
        if isinstance(size, int) and st.st_size != size:
            kind = "truncated" if st.st_size < size else "longer than written"
            raise CheckpointError(f"{label} is {kind}: {st.st_size} of {size} bytes")
        if sha256_file(p) != want.get("sha256"):
            raise CheckpointError(f"{label} does not match its SHA-256 in {MANIFEST} (modified or corrupt)")


def _check_owner(path: str, st: Optional[os.stat_result] = None) -> None:
    """Refuse what another user owns or anyone may write (it could have been swapped under us)."""
    st = st or os.lstat(path)
    me = os.geteuid()
    if st.st_uid != me:
        raise CheckpointError(f"{path} is owned by uid {st.st_uid}, not by the current user (uid {me})")
    if st.st_mode & stat.S_IWOTH and not (stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX):
        raise CheckpointError(f"{path} is writable by every user")


def _ckpt_number(name: str) -> int:
    m = _CKPT_RE.match(name)
    return int(m.group(1)) if m else -1


class RunDir:
    """Paths and writers of one run directory."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        os.makedirs(self.path, exist_ok=True)
        self.config_path = os.path.join(self.path, "config.yaml")
        self.metrics_path = os.path.join(self.path, "metrics.jsonl")
        self.tb_dir = os.path.join(self.path, "tb")
        self.adapters_dir = os.path.join(self.path, "adapters")
        self.ckpt_dir = os.path.join(self.path, "checkpoints")
        self.plot_path = os.path.join(self.path, "test_accuracy.png")
        self.report_path = os.path.join(self.path, "report.md")

    def adapter_path(self, iteration: int) -> str:
        return os.path.join(self.adapters_dir, f"iter_{iteration:03d}")

    # -------------------------------------------------------------- metrics
    def append_metrics(self, record: Dict[str, Any]) -> None:
        line = json.dumps(_clean(record), default=_json_default) + "\n"
        try:
            with open(self.metrics_path, "a") as f:
                f.write(line)
                f.flush()
        except OSError as e:
            from rls3_ros.core.atomic_io import is_disk_full

            if is_disk_full(e):
                raise DiskFullError(self.metrics_path) from e
            raise

    def metrics_size(self) -> int:
        return os.path.getsize(self.metrics_path) if os.path.exists(self.metrics_path) else 0

    def truncate_metrics(self, size: int) -> None:
        if os.path.exists(self.metrics_path):
            with open(self.metrics_path, "r+") as f:
                f.truncate(size)
                f.flush()
                os.fsync(f.fileno())

    def read_metrics(self) -> List[Dict[str, Any]]:
        if not os.path.exists(self.metrics_path):
            return []
        with open(self.metrics_path) as f:
            return [json.loads(line) for line in f if line.strip()]

    # -------------------------------------------------------------- checkpoints
    def _latest_name(self) -> str:
        try:
            with open(os.path.join(self.ckpt_dir, "LATEST")) as f:
                name = f.read(256).strip()
        except (OSError, UnicodeDecodeError):
            return ""
        return name if _ckpt_number(name) >= 0 and os.path.isdir(os.path.join(self.ckpt_dir, name)) else ""

    def checkpoint_candidates(self) -> List[str]:
        """Checkpoint directories to resume from, newest first: the one ``LATEST`` names, then the
        older ones (a ``LATEST`` that is torn or missing: every ``ckpt-NNN``). A checkpoint newer
        than ``LATEST`` was never committed and is not a candidate."""
        if not os.path.isdir(self.ckpt_dir):
            return []
        names = sorted((n for n in os.listdir(self.ckpt_dir)
                        if _ckpt_number(n) >= 0 and os.path.isdir(os.path.join(self.ckpt_dir, n))),
                       key=_ckpt_number, reverse=True)
        latest = self._latest_name()
        if latest:
            names = [latest] + [n for n in names if _ckpt_number(n) < _ckpt_number(latest)]
        return [os.path.join(self.ckpt_dir, n) for n in names]

    def latest_checkpoint(self) -> Optional[str]:
        """The newest checkpoint directory (LATEST's, else the highest-numbered one), or None."""
        c = self.checkpoint_candidates()
        return c[0] if c else None

    def clean_stale(self) -> List[str]:
        """Remove what killed saves left in ``checkpoints/`` and ``adapters/`` (see module docstring)."""
        done = []
        for d in (self.ckpt_dir, self.adapters_dir):
            done += clean_stale(d)
        legacy = os.path.join(self.ckpt_dir, "LATEST.tmp")  # the name earlier versions used
        if os.path.isfile(legacy) and os.lstat(legacy).st_uid == os.geteuid():
            os.unlink(legacy)
            done.append(f"removed {legacy}")
        return done

    def write_checkpoint(self, name: str, writer, keep: int = 2) -> str:
        """``writer(tmpdir)`` fills a temp dir; a manifest of its files (and of the adapter its
        ``meta.json`` names) is added, everything fsynced, the dir renamed to ``name`` and LATEST
        replaced. Older checkpoints beyond ``keep`` are removed."""
        os.makedirs(self.ckpt_dir, exist_ok=True)
        self.clean_stale()
        if os.path.exists(self.metrics_path):  # the checkpoint records its size: that much must be on disk
            fsync_file(self.metrics_path)
        final = os.path.join(self.ckpt_dir, name)
        with atomic_dir(final) as tmp:
            writer(tmp)
            manifest: Dict[str, Any] = {"format": CHECKPOINT_FORMAT, "files": _hash_tree(tmp), "adapter": None}
            adapter = ""
            try:
                with open(os.path.join(tmp, "meta.json")) as f:
                    adapter = str(json.load(f).get("adapter") or "")
            except (OSError, ValueError, AttributeError):
                pass
            if adapter and os.path.isdir(adapter):
                manifest["adapter"] = {"name": os.path.basename(adapter.rstrip("/")), "files": _hash_tree(adapter)}
            elif adapter:  # an adapter on another machine (a remote vlm_trainer): nothing here to hash
                manifest["adapter"] = {"name": os.path.basename(adapter.rstrip("/")), "files": None}
            with open(os.path.join(tmp, MANIFEST), "w") as f:
                json.dump(manifest, f, indent=1)
        atomic_write_text(os.path.join(self.ckpt_dir, "LATEST"), name + "\n")
        olds = sorted((d for d in os.listdir(self.ckpt_dir) if _ckpt_number(d) >= 0 and d != name), key=_ckpt_number)
        for d in olds[:-(keep - 1)] if keep > 1 else olds:
            remove_tree(os.path.join(self.ckpt_dir, d))
        return final

    def resolve_adapter(self, adapter: str) -> str:
        """The adapter directory a checkpoint's ``meta.json`` names: the same name under this run's
        ``adapters/`` first (a run directory moved or copied elsewhere uses its own), else the
        recorded path (an adapter directory outside the run). "" for the base model."""
        if not adapter:
            return ""
        own = os.path.join(self.adapters_dir, os.path.basename(adapter.rstrip("/")))
        return own if os.path.isdir(own) else adapter

    def check_run_owner(self) -> None:
        """The run directory and its ``checkpoints/`` are ours and not writable by others."""
        for p in (self.path, self.ckpt_dir):
            if os.path.exists(p):
                try:
                    _check_owner(p)
                except CheckpointError as e:
                    raise CheckpointError(f"refusing to resume {self.path}: {e}") from None

    def verify_checkpoint(self, ck: str) -> Dict[str, Any]:
        """Check a checkpoint before anything of it is read (CheckpointError with the reason): owned
        by us, in the current format, every file (and its adapter's) as the manifest recorded.
        Returns its ``meta.json``."""
        _check_owner(ck)
        mpath = os.path.join(ck, MANIFEST)
        if not os.path.isfile(mpath):
            legacy = [f for f in LEGACY_FILES if os.path.exists(os.path.join(ck, f))]
            if legacy:
                raise CheckpointError(f"it is in the old pickle format ({legacy[0]}), which can run code when "
                                      "loaded (issue 26): not loaded")
            raise CheckpointError(f"it has no {MANIFEST} (incomplete, or not written by this version)")
        _check_owner(mpath)
        try:
            with open(mpath, encoding="utf-8") as f:
                manifest = json.load(f)
        except (OSError, ValueError, RecursionError) as e:
            raise CheckpointError(f"{MANIFEST} does not parse ({type(e).__name__})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{MANIFEST} is not of checkpoint format {CHECKPOINT_FORMAT}")
        _check_files(ck, manifest.get("files"), "checkpoint")
        for d, dirs, files in os.walk(ck):
            for n in dirs:
                _check_owner(os.path.join(d, n))
        try:
            with open(os.path.join(ck, "meta.json"), encoding="utf-8") as f:
                meta = json.load(f)
            int(meta["iteration"]), int(meta["metrics_size"])
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:
            raise CheckpointError(f"meta.json is unreadable ({type(e).__name__}: {e})") from None
        adapter = self.resolve_adapter(str(meta.get("adapter") or ""))
        if adapter:
            rec = manifest.get("adapter")
            if not isinstance(rec, dict):
                raise CheckpointError(f"{MANIFEST} records no files of its adapter {os.path.basename(adapter)}")
            if rec.get("files") is not None:
                if not os.path.isdir(adapter):
                    raise CheckpointError(f"its adapter {adapter} is missing")
                _check_owner(adapter)
                _check_files(adapter, rec.get("files"), f"adapter {os.path.basename(adapter)}")
        return meta

    def resume_checkpoint(self, load: Callable[[str, Dict[str, Any]], Any],
                          log: Callable[[str], None] = print) -> Optional[Tuple[str, Dict[str, Any], Any]]:
        """Resume from the newest checkpoint that verifies and loads: ``load(ck, meta)`` reads and
        applies its state (raising on anything unreadable). Returns (checkpoint dir, meta, what
        ``load`` returned), None when the run has no checkpoint. Skipped checkpoints are reported in
        one ``log`` line; when none loads, CheckpointError (one line)."""
        self.check_run_owner()
        self.clean_stale()
        cands = self.checkpoint_candidates()
        if not cands:
            return None
        failed: List[Tuple[str, str]] = []
        for ck in cands:
            try:
                meta = self.verify_checkpoint(ck)
                out = load(ck, meta)
            except (CheckpointError, StateError) as e:
                failed.append((os.path.basename(ck), str(e)))
                continue
            except Exception as e:  # noqa: BLE001 - whatever a checkpoint's content raises: not this one
                failed.append((os.path.basename(ck), f"{type(e).__name__}: {_one_line(e)}"))
                continue
            if len(failed) == 1:
                log(f"checkpoint {failed[0][0]} is unreadable ({failed[0][1]}); resuming from {os.path.basename(ck)}")
            elif failed:
                skipped = ", ".join(f"{n} ({r})" for n, r in failed)
                log(f"checkpoints {skipped} are unreadable; resuming from {os.path.basename(ck)}")
            return ck, meta, out
        if all("old pickle format" in r for _, r in failed):
            raise CheckpointError(f"{self.path} holds checkpoints in the old pickle format "
                                  f"({failed[0][0]}), which can run code when loaded (issue 26): refusing to "
                                  "resume it; start a new run")
        raise CheckpointError(f"no checkpoint of {self.path} loads: "
                              + ", ".join(f"{n} ({r})" for n, r in failed))

    def check_resumable(self) -> Optional[str]:
        """Before building anything: the newest checkpoint that verifies (None: the run has no
        checkpoint); CheckpointError when there are checkpoints and none verifies."""
        found = self.resume_checkpoint(lambda ck, meta: None, log=lambda m: None)  # resume says it, later
        return found[0] if found else None


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:300]


# ------------------------------------------------------------------------------ the loop's state
def write_loop_state(d: str, sched: Scheduler, envs: Sequence[Any], agent: Any, run: RunDir) -> None:
    """Fill checkpoint directory ``d``: scheduler and env state (JSON + npz), the agent's own files
    and ``meta.json`` (what ``rls3 launch training --resume`` reads)."""
    it = sched.iteration
    dump_state(d, "scheduler", sched.state_dict())
    dump_state(d, "envs", [{"episode": int(e.episodes_done), "rng": e._rng.bit_generator.state} for e in envs])
    agent.save(os.path.join(d, "agent"))
    last = sched.history[-1] if sched.history else None
    with open(os.path.join(d, "meta.json"), "w") as f:
        json.dump({"format": CHECKPOINT_FORMAT, "iteration": it, "adapter": last.adapter_path if last else "",
                   "metrics_size": run.metrics_size(), "episodes": sched.episodes, "time": time.time()}, f)


def read_loop_state(ck: str, meta: Dict[str, Any], run: RunDir, sched: Scheduler, envs: Sequence[Any], agent: Any,
                    adapter_loader: Optional[Callable[[str], None]] = None) -> None:
    """Apply checkpoint ``ck`` (verified) to the scheduler, envs, agent and VLM adapter."""
    state = load_state(ck, "scheduler")
    env_states = load_state(ck, "envs")
    if not isinstance(state, dict):
        raise StateError("scheduler.json holds no scheduler state")
    if not isinstance(env_states, list) or len(env_states) < len(envs) or \
            not all(isinstance(s, dict) and isinstance(s.get("episode"), int) for s in env_states):
        raise StateError(f"envs.json holds no state for {len(envs)} env(s)")
    sched.load_state_dict(state)
    for e, s in zip(envs, env_states):
        e.episode = e.episodes_done = int(s["episode"])
        e._rng.bit_generator.state = s["rng"]
    agent.load(os.path.join(ck, "agent"))
    adapter = run.resolve_adapter(str(meta.get("adapter") or ""))
    if adapter and adapter_loader is not None:
        adapter_loader(adapter)


class MetricsCallback(SchedulerCallbacks):
    """Writes metrics.jsonl and TensorBoard scalars for every episode and iteration."""

    def __init__(self, run: RunDir, tb: bool = True, purge_step: Optional[int] = None):
        self.run = run
        self.writer = None
        if tb:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(run.tb_dir, purge_step=purge_step)
            except Exception:  # tensorboard missing: JSONL only
                self.writer = None

    def on_episode(self, scheduler: Scheduler, record) -> None:
        d = {
            "type": "episode", "episode": scheduler.episodes, "env": record.env_id, "scene_seed": record.scene_seed,
            "scene_type": record.scene_type, "steps": record.steps, "renders": record.renders,
            "valid": len(record.samples), "invalid": record.invalid, "j2": record.j2,
            "intrinsic_return": record.intrinsic_return, "move_kinds": record.move_kinds,
            "batch_size": len(scheduler.batch), "valid_samples": scheduler.valid_samples,
            "total_renders": scheduler.renders, "iteration": scheduler.iteration, "wall_s": scheduler.wall_s,
        }
        self.run.append_metrics(d)
        if self.writer is not None:
            ep = scheduler.episodes
            if not math.isnan(record.j2):
                self.writer.add_scalar("episode/j2", record.j2, ep)
            self.writer.add_scalar("episode/valid_fraction", len(record.samples) / max(1, record.steps), ep)
            self.writer.add_scalar("episode/intrinsic_return", record.intrinsic_return, ep)
            self.writer.add_scalar("episode/batch_size", len(scheduler.batch), ep)
            self.writer.add_scalar("counts/valid_samples", scheduler.valid_samples, ep)
            self.writer.add_scalar("counts/renders", scheduler.renders, ep)

    def on_iteration(self, scheduler: Scheduler, info: IterationInfo) -> None:
        d = {"type": "iteration", **info.to_dict()}
        self.run.append_metrics(d)
        if self.writer is not None:
            ep = scheduler.episodes
            if not math.isnan(info.test_accuracy):
                self.writer.add_scalar("test/accuracy", info.test_accuracy, ep)
                for t, a in info.test_per_term.items():
                    self.writer.add_scalar(f"test_term/{t}", a, ep)
            if not math.isnan(info.val_accuracy):
                self.writer.add_scalar("val/accuracy", info.val_accuracy, ep)
            if not math.isnan(info.fine_tune_loss):
                self.writer.add_scalar("fine_tune/loss", info.fine_tune_loss, ep)
            self.writer.flush()

    def on_stop(self, scheduler: Scheduler, reason: str) -> None:
        self.run.append_metrics({"type": "stop", "reason": reason, "episode": scheduler.episodes,
                                 "iteration": scheduler.iteration, "wall_s": scheduler.wall_s})

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
