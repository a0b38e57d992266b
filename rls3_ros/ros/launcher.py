"""``rls3 launch training|query``: start the node graph, each node its own process.

Where ROS 2's ``launch`` package is not installed (it is not on PyPI), this starts the same
graph as ``launch/training.launch.py`` / ``launch/query.launch.py`` (both built from the nodes
of ``rls3_ros.ros.graph_spec``) from the same parameter files: every node runs as ``python -m
rls3_ros.ros.nodes.<node> --ros-args --params-file config/<graph>.yaml [-r __ns:=/<ns>] [-r a:=b]
[-p ...]``. ``--namespace ns`` pushes the whole graph into ``ns`` (names inside are relative).

- Output of every node is printed line by line, prefixed with ``[<namespace/>node]``.
- Ctrl-C (SIGINT) or SIGTERM stops every node (SIGINT, then SIGTERM, then SIGKILL) and the
  launcher exits with 130 (128 + SIGINT), however it was started (a background job's ignored or a
  parent's blocked SIGINT is restored). A node stopped by SIGINT/SIGTERM exits with 0.
- A node that exits stops the run: the launcher prints its name, exit code and last log lines
  and returns that code (non-zero). The training graph ends normally when ``rl_sampler``
  finishes its budget and exits with 0; then the other nodes are stopped and 0 is returned.
- ``--respawn-bridges`` (training): a sim_bridge that dies is started again instead, and the
  rl_sampler gets ``bridge_lost:=wait`` (it reports the loss, waits for the bridge, goes on).
- ``--resume runs/<ts>`` (training): continue that run from its last checkpoint (written by
  rl_sampler after every fine-tune; a run stopped or killed at any point keeps the last complete
  one). rl_sampler gets ``run_dir`` + ``resume:=true`` and the run's own settings back from its
  ``config.yaml`` (agent, seed, schedule, rewards, eval sets: ``--set`` still overrides them, e.g.
  a larger budget); vlm_trainer starts on the checkpoint's adapter (``adapter``); the number of
  sim_bridges is the run's. Pass the same parameter files as the first launch (model, image
  size, dataset key). A directory without a checkpoint is refused (one line, exit code 2).

Graphs:
- ``training``: ``--bridges N`` sim_bridges (namespaces sim0..simN-1 when N > 1, none when 1),
  caption_oracle, vlm_trainer, rl_sampler (``bridge_namespaces`` set to match).
- ``query``: spatial_query (+ a sim_bridge as a demo camera with ``--with-sim``).

Examples::

    rls3 launch training --bridges 2 --set rl_sampler.budget_valid_samples=200
    rls3 launch training --resume runs/20250101-120000
    rls3 launch query --with-sim
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from rls3_ros.core.share_dir import data_path
from rls3_ros.ros.graph_spec import GRAPHS, NodeSpec, apply_node_sets, graph_nodes, parse_set  # noqa: F401 - re-exported


def config_dir() -> str:
    return str(data_path("config"))


def _param_text(value) -> str:
    """A value as ``-p name:=<text>`` (parsed as YAML by rcl): the type is kept."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    import json

    if isinstance(value, (list, tuple)):  # a YAML flow sequence: [1.0, 2.0], ["a", "b"]
        return json.dumps(list(value))
    return json.dumps(str(value))


@dataclass
class ResumeInfo:
    run_dir: str  # absolute
    checkpoint: str  # checkpoints/<name>
    iteration: int
    adapter: str  # "" = base model (checkpoint of iteration 0)
    n_envs: int
    sampler_values: Dict[str, object]  # rl_sampler parameters from the run's config.yaml
    sampler_params: Dict[str, str]  # the same as ``-p`` text


def resume_info(path: str) -> ResumeInfo:
    """What a graph needs to continue the run in ``path`` (raises ValueError with a one-line reason).

    Reads what rl_sampler wrote: ``checkpoints/LATEST`` -> ``ckpt-NNN/meta.json`` (iteration,
    adapter of that fine-tune) and ``config.yaml`` (the run's settings)."""
    import json

    import yaml

    if not os.path.isdir(path):
        raise ValueError(f"{path} is not a directory")
    run_dir = os.path.abspath(path)
    ck = ""
    try:  # the same rule as RunDir.latest_checkpoint (read-only: RunDir() would create directories)
        with open(os.path.join(run_dir, "checkpoints", "LATEST")) as f:
            name = f.read().strip()
        if name and os.path.isdir(os.path.join(run_dir, "checkpoints", name)):
            ck = os.path.join(run_dir, "checkpoints", name)
    except OSError:
        pass
    if (not ck and os.path.isdir(os.path.join(run_dir, "checkpoints"))) or \
            (ck and os.path.isfile(os.path.join(ck, "MANIFEST.json"))):  # the checkpoint rl_sampler resumes
        from rls3_ros.loop.run_dir import RunDir  # from: the newest that verifies (owner, SHA-256 manifest)

        ck = RunDir(run_dir).check_resumable() or ""  # CheckpointError (a ValueError): one line
    if not ck:
        raise ValueError(f"{path} has no checkpoint (no checkpoints/LATEST naming a complete checkpoint): "
                         "nothing to resume; start a new run instead")
    try:
        with open(os.path.join(ck, "meta.json")) as f:
            meta = json.load(f)
        iteration = int(meta["iteration"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"checkpoint {ck} is unreadable (meta.json: {e})") from None
    cfg_path = os.path.join(run_dir, "config.yaml")
    try:
        with open(cfg_path) as f:
            cfg = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"{path} is not a run directory (config.yaml: {e})") from None
    rc = cfg.get("run") if isinstance(cfg, dict) else None
    if not isinstance(rc, dict):
        raise ValueError(f"{cfg_path} has no 'run' section")
    if not rc.get("graph"):
        raise ValueError(f"{path} is a run of `rls3 train` (one process): continue it with `rls3 train --resume {path}`")
    adapter = str(meta.get("adapter") or "")
    if adapter and not os.path.isdir(adapter):  # the run directory was moved: same name under its adapters/
        moved = os.path.join(run_dir, "adapters", os.path.basename(adapter.rstrip("/")))
        if not os.path.isdir(moved):
            raise ValueError(f"adapter {adapter} of checkpoint {os.path.basename(ck)} is missing")
        adapter = moved
    from rls3_ros.loop.config import RESUMED_PARAMS

    values = {}
    for (section, key), name in RESUMED_PARAMS.items():  # the schema's keys the rl_sampler takes
        sec = cfg.get(section)
        if isinstance(sec, dict) and key in sec and sec[key] is not None and sec[key] != []:
            values[name] = sec[key]  # (an empty list cannot be a -p value: it is the default anyway)
    return ResumeInfo(run_dir, ck, iteration, adapter, int(rc.get("n_envs") or 1), values,
                      {k: _param_text(v) for k, v in values.items()})


def node_command(spec: NodeSpec, params_files: Sequence[str]) -> List[str]:
    cmd = [sys.executable, "-m", spec.module, "--ros-args"]
    for f in params_files:
        cmd += ["--params-file", f]
    if spec.namespace:
        cmd += ["-r", f"__ns:=/{spec.namespace.strip('/')}"]
    for a, b in spec.remappings:
        cmd += ["-r", f"{a}:={b}"]
    for k, v in spec.params.items():
        cmd += ["-p", f"{k}:={_param_text(v)}"]
    return cmd


class GraphRun:
    """Processes of one graph with prefixed logs; stops all when one exits."""

    def __init__(self, specs: Sequence[NodeSpec], params_files: Sequence[str], env: Optional[Dict[str, str]] = None,
                 out=None, log_dir: str = ""):
        self.specs = list(specs)
        self.params_files = list(params_files)
        self.env = dict(env or os.environ)
        self.out = out or sys.stdout
        self.log_dir = log_dir
        self.procs: Dict[str, subprocess.Popen] = {}
        self.tails: Dict[str, deque] = {}
        self.events: "queue.Queue[tuple]" = queue.Queue()
        self._print_lock = threading.Lock()
        self._files = {}
        self._stopping = False

    def _say(self, label: str, line: str) -> None:
        with self._print_lock:
            self.out.write(f"[{label}] {line}\n")
            self.out.flush()
            f = self._files.get(label)
            if f is not None:
                f.write(line + "\n")
                f.flush()

    def _pump(self, label: str, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.tails[label].append(line)
            self._say(label, line)
        code = proc.wait()
        if self._stopping:
            self._say("launch", f"{label} exited ({code})")
        self.events.put((label, code))

    def start(self) -> None:
        if self.log_dir:
            os.makedirs(self.log_dir, exist_ok=True)
        for spec in self.specs:
            self._start_one(spec)

    def _start_one(self, spec: NodeSpec) -> None:
        cmd = node_command(spec, self.params_files)
        label = spec.label
        if self.log_dir:
            mode = "a" if label in self._files else "w"
            if label in self._files:
                self._files[label].close()
            self._files[label] = open(os.path.join(self.log_dir, label.replace("/", "_") + ".log"), mode)
        proc = subprocess.Popen(cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        self._say("launch", f"started {label} (pid {proc.pid}): {' '.join(cmd[1:])}")
        self.procs[label] = proc
        self.tails[label] = deque(maxlen=15)
        threading.Thread(target=self._pump, args=(label, proc), name=f"log-{label}", daemon=True).start()

    def wait(self, timeout: Optional[float] = None) -> int:
        """Block until a node exits (or timeout); stop the rest; return the graph's exit code."""
        specs = {s.label: s for s in self.specs}
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                # short waits: a blocking get() may not wake for a Ctrl-C the kernel hands to another thread
                label, code = self.events.get(timeout=0.25)
            except queue.Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    self._say("launch", f"timeout after {timeout} s: stopping the graph")
                    self.stop()
                    return 124
                continue
            if specs[label].respawn and not self._stopping:
                why = f"exit code {code}" if code >= 0 else f"killed by signal {-code}"
                self._say("launch", f"{label} died ({why}); respawning it")
                self._start_one(specs[label])
                continue
            break
        if code == 0 and specs[label].required_exit_ok:
            self._say("launch", f"{label} finished (exit 0): stopping the graph")
            result = 0
        else:
            why = f"exit code {code}" if code >= 0 else f"killed by signal {-code}"
            self._say("launch", f"{label} died ({why}); stopping the graph. Last lines of {label}:")
            for line in list(self.tails[label])[-10:]:
                self._say("launch", f"  | {line}")
            result = code if code > 0 else 1
        self.stop()
        return result

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        alive = {k: p for k, p in self.procs.items() if p.poll() is None}
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            for p in alive.values():
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + (timeout if sig != signal.SIGKILL else 5.0)
            while time.monotonic() < deadline and any(p.poll() is None for p in alive.values()):
                time.sleep(0.05)
            alive = {k: p for k, p in alive.items() if p.poll() is None}
            if not alive:
                break
        for f in self._files.values():
            f.close()


def cli_launch(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(prog="rls3 launch", description="start the node graph (each node its own process)",
                                 epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("graph", choices=GRAPHS)
    ap.add_argument("--params-file", action="append", default=[],
                    help="extra ROS parameter file(s) applied after config/<graph>.yaml")
    ap.add_argument("--bridges", type=int, default=None,
                    help="training: number of sim_bridges (namespaces sim0..; default 1, or the resumed run's)")
    ap.add_argument("--with-sim", action="store_true", help="query: also start a sim_bridge as a demo camera")
    ap.add_argument("--respawn-bridges", action="store_true",
                    help="training: restart a sim_bridge that dies; rl_sampler waits for it (bridge_lost:=wait)")
    ap.add_argument("--run-dir", default="", help="training: run directory (default runs/<timestamp>)")
    ap.add_argument("--resume", default="", metavar="RUN_DIR",
                    help="training: continue the run in RUN_DIR from its last checkpoint (its own settings, "
                         "the checkpoint's adapter; --set still overrides)")
    ap.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE",
                    help="override one parameter of one node, e.g. rl_sampler.budget_valid_samples=100")
    ap.add_argument("--namespace", default="", help="namespace of the whole graph (every name inside is relative)")
    ap.add_argument("--image-topic", default="image_raw", help="camera topic (remapped onto the nodes' image_raw)")
    ap.add_argument("--scene-topic", default="scene_state", help="query: scene-state topic")
    ap.add_argument("--adapter", default="", help="query: LoRA adapter directory to serve")
    ap.add_argument("--agent", default="", help="training: rl_sampler's agent ('' = from the parameter file)")
    ap.add_argument("--log-dir", default="", help="also write each node's log to <dir>/<node>.log")
    ap.add_argument("--timeout", type=float, default=0.0, help="stop the graph after this many seconds (0 = never)")
    args = ap.parse_args(argv)

    base = os.path.join(config_dir(), f"{args.graph}.yaml")
    if not os.path.exists(base):
        print(f"rls3 launch: parameter file {base} not found", file=sys.stderr)
        return 2
    for f in args.params_file:
        if not os.path.exists(f):
            print(f"rls3 launch: parameter file {f} not found", file=sys.stderr)
            return 2
    run_dir = args.run_dir
    resume: Optional[ResumeInfo] = None
    if args.resume:
        if args.graph != "training":
            print("rls3 launch: --resume applies to the training graph only", file=sys.stderr)
            return 2
        if run_dir and os.path.abspath(run_dir) != os.path.abspath(args.resume):
            print("rls3 launch: give --resume RUN_DIR or --run-dir, not both", file=sys.stderr)
            return 2
        try:
            resume = resume_info(args.resume)
        except ValueError as e:
            print(f"rls3 launch: cannot resume: {e}", file=sys.stderr)
            return 2
        if args.bridges is not None and args.bridges != resume.n_envs:
            print(f"rls3 launch: cannot resume: {args.resume} was run with {resume.n_envs} sim_bridge(s), "
                  f"not --bridges {args.bridges}", file=sys.stderr)
            return 2
        args.bridges = resume.n_envs
        run_dir = resume.run_dir
    if args.bridges is None:
        args.bridges = 1
    if args.graph == "training":
        kw = dict(bridges=args.bridges, namespace=args.namespace, image_topic=args.image_topic, agent=args.agent,
                  resume=resume, respawn_bridges=args.respawn_bridges)
    else:
        kw = dict(with_sim=args.with_sim, namespace=args.namespace, adapter=args.adapter, image_topic=args.image_topic,
                  scene_topic=args.scene_topic)
    try:
        sets = [parse_set(item) for item in args.set]
        apply_node_sets(graph_nodes(args.graph, **kw), sets)  # refused before a run directory is made
        if args.graph == "training":
            if not run_dir:  # created only once the arguments are known good
                from rls3_ros.loop.run_dir import new_run_dir

                run_dir = new_run_dir()
            kw["run_dir"] = os.path.abspath(run_dir)
        specs = graph_nodes(args.graph, **kw)
        apply_node_sets(specs, sets)
    except ValueError as e:
        print(f"rls3 launch: {e}", file=sys.stderr)
        return 2
    env = dict(os.environ)
    env.setdefault("MUJOCO_GL", "egl")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None)  # children re-bootstrap with this interpreter's venv
    g = GraphRun(specs, [base, *args.params_file], env, log_dir=args.log_dir)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    # Ctrl-C must stop the graph however this process was started: a shell's background job
    # (`rls3 launch ... &`) or a parent that ignores or blocks SIGINT hands that state down.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    old = signal.signal(signal.SIGTERM, on_term)
    try:
        if resume is not None:
            g._say("launch", f"resuming {resume.run_dir} from {os.path.basename(resume.checkpoint)} (iteration "
                             f"{resume.iteration}, adapter {resume.adapter or 'base model'})")
        g.start()
        if run_dir:
            g._say("launch", f"run directory: {os.path.abspath(run_dir)}")
        return g.wait(timeout=args.timeout or None)
    except KeyboardInterrupt:
        g._say("launch", "interrupted: stopping every node")
        g.stop()
        return 130
    finally:
        signal.signal(signal.SIGTERM, old)
        signal.signal(signal.SIGINT, old_int)


if __name__ == "__main__":
    sys.exit(cli_launch(sys.argv[1:]))
