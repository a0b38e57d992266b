"""Issue 26 item 5: run directories are crash-safe and their checkpoints cannot run code.

Every scenario runs the real ``rls3 train`` (or the reliability victim) in its own process on a
real run directory (a tiny run: MuJoCo renders, the caption oracle, the tiny torch/peft VLM, SAC):

1. the newest checkpoint's state file is truncated (what a power loss leaves): ``--resume`` falls
   back to the previous checkpoint, says so in one line, and finishes the run (exit 0); when no
   checkpoint loads: one line, exit 2;
2. crafted checkpoints never run a payload: a pickle-era run directory (``scheduler.pkl``) is
   refused in one line naming the issue; pickles planted at every old name beside a valid
   checkpoint are never read, and an ``.npz`` holding a pickled object array (manifest rewritten
   to match) is refused (``allow_pickle=False``) and the previous checkpoint used;
3. a run directory or checkpoint owned by another user is refused;
4. a full disk while saving (a real tmpfs, or ``RLIMIT_FSIZE`` where mounting is not allowed): one
   line, exit 2, the previous checkpoint intact and resumable once there is space again;
5. a save SIGKILLed midway leaves a hidden temp directory; the next resume removes it (and only
   what is ours and older than that process).
"""

from __future__ import annotations

import base64
import io
import json
import os
import pickle
import resource
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from reliability_common import TEST_DIR, TEST_MODEL, node_env
from ros_harness import NodeProcess, deadline

pytestmark = pytest.mark.timeout(900)

TINY = ["--set", f"run.vlm={TEST_MODEL}", "--set", "run.image_size=64", "--set", "run.torch_threads=1",
        "--set", "loop.T=3", "--set", "loop.T0=2", "--set", "loop.E=2", "--set", "loop.fine_tune_steps=1",
        "--set", "loop.budget_valid_samples=8", "--set", "eval.test_scenes=2", "--set", "eval.replay_scenes=2",
        "--set", "eval.moves_per_scene=3", "--set", "eval.test_per_term=4", "--no-pretrain", "--no-progress"]


class Payload:
    """Unpickling this runs ``touch <marker>``: what a crafted pickle does."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _env(root: Path) -> dict:
    env = node_env(root)
    env["MUJOCO_GL"] = "egl"
    env["MESA_SHADER_CACHE_DIR"] = str(root / "mesa")
    return env


def train(env: dict, *args: str, preexec_fn=None, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rls3_ros.cli", "train", *args], env=env, capture_output=True,
                          text=True, timeout=deadline(timeout), preexec_fn=preexec_fn)


def _resume(env: dict, run: Path, **kw) -> subprocess.CompletedProcess:
    return train(env, "--resume", str(run), "--no-progress", "--no-pretrain", **kw)


def _reasons(stderr: str):
    """What the CLI said besides its progress log: the one-line reasons."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("[rls3 train]")]


def _latest(run: Path) -> str:
    return (run / "checkpoints" / "LATEST").read_text().strip()


def _copy(base: Path, dst: Path) -> Path:
    shutil.copytree(base, dst, symlinks=True)
    return dst


def _state_file(ck: Path) -> Path:
    """The checkpoint's scheduler state, whatever its format."""
    for name in ("scheduler.json", "scheduler.pkl"):
        if (ck / name).exists():
            return ck / name
    raise AssertionError(f"no scheduler state in {sorted(p.name for p in ck.iterdir())}")


def _truncate(p: Path) -> None:
    with open(p, "r+b") as f:
        f.truncate(p.stat().st_size // 2)


def _hashes(d: Path) -> dict:
    import hashlib

    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A finished tiny SAC run (checkpoints ckpt-002 and ckpt-003 kept) and its environment."""
    root = tmp_path_factory.mktemp("secruns")
    env = _env(root)
    run = root / "base"
    r = train(env, *TINY, "--agent", "sac", "--out", str(run))
    assert r.returncode == 0, r.stderr[-3000:]
    assert _latest(run) == "ckpt-003" and (run / "checkpoints" / "ckpt-002").is_dir()
    return env, run


def _unfinished(base_run: Path, dst: Path) -> Path:
    """The run as a kill before its last checkpoint's commit leaves it: ckpt-002 is the newest."""
    run = _copy(base_run, dst)
    shutil.rmtree(run / "checkpoints" / "ckpt-003")
    (run / "checkpoints" / "LATEST").write_text("ckpt-002\n")
    return run


# -- 1. a truncated newest checkpoint --------------------------------------------------------------
def test_truncated_newest_checkpoint_falls_back_in_one_line_and_finishes(base, tmp_path):
    env, base_run = base
    run = _copy(base_run, tmp_path / "run")
    _truncate(_state_file(run / "checkpoints" / "ckpt-003"))
    r = _resume(env, run)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    said = [line for line in r.stderr.splitlines() if "unreadable" in line]
    assert len(said) == 1, r.stderr[-3000:]
    assert "checkpoint ckpt-003 is unreadable (scheduler.json is truncated" in said[0]
    assert said[0].endswith("resuming from ckpt-002"), said[0]
    assert "resumed from" in r.stderr and "ckpt-002" in r.stderr.split("resumed from", 1)[1].splitlines()[0]
    # the run went on from ckpt-002 and committed complete checkpoints after it
    from rls3_ros.loop.run_dir import RunDir

    rd = RunDir(str(run))
    assert int(_latest(run)[-3:]) >= 3
    rd.verify_checkpoint(rd.latest_checkpoint())
    its = [m["iteration"] for m in rd.read_metrics() if m["type"] == "iteration"]
    assert its == list(range(its[-1] + 1))  # each iteration recorded once


def test_no_checkpoint_loads_is_one_line_and_exit_2(base, tmp_path):
    env, base_run = base
    run = _copy(base_run, tmp_path / "run")
    for ck in ("ckpt-002", "ckpt-003"):
        _truncate(_state_file(run / "checkpoints" / ck))
    r = _resume(env, run)
    assert r.returncode == 2, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    reasons = _reasons(r.stderr)
    assert len(reasons) == 1, r.stderr[-3000:]
    assert reasons[0].startswith(f"rls3 train: no checkpoint of {run} loads: ckpt-003 (scheduler.json is truncated")
    assert "ckpt-002 (scheduler.json is truncated" in reasons[0]


# -- 2. crafted checkpoints ------------------------------------------------------------------------
def test_pickle_era_run_directory_is_refused_without_unpickling(base, tmp_path):
    env, base_run = base
    run = _copy(base_run, tmp_path / "run")
    marker = tmp_path / "PWNED"
    for name in ("ckpt-002", "ckpt-003"):  # what an earlier version wrote, with a payload in each pickle
        ck = run / "checkpoints" / name
        shutil.rmtree(ck)
        (ck / "agent").mkdir(parents=True)
        (ck / "meta.json").write_text(json.dumps({"iteration": int(name[-3:]), "adapter": "", "metrics_size": 0,
                                                  "episodes": 1}))
        for f in ("scheduler.pkl", "envs.pkl", "agent/rng.pkl", "agent/replay_buffer.pkl"):
            (ck / f).write_bytes(pickle.dumps(Payload(marker)))
    r = _resume(env, run)
    assert not marker.exists(), "a pickle from the run directory was loaded"
    assert r.returncode == 2, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    reasons = _reasons(r.stderr)
    assert len(reasons) == 1 and "old pickle format" in reasons[0] and "issue 26" in reasons[0], reasons


def _sb3_zip_with_payload(marker: Path) -> bytes:
    """An SB3 model.zip whose ``data`` carries a cloudpickled payload (what SB3's load decodes)."""
    blob = base64.b64encode(pickle.dumps(Payload(marker))).decode()
    data = {"policy_class": {":type:": "<class 'abc.ABCMeta'>", ":serialized:": blob}}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("data", json.dumps(data))
        z.writestr("_stable_baselines3_version", "2.9.2")
    return buf.getvalue()


def _rewrite_manifest(ck: Path) -> None:
    """What an attacker who can write the directory does: a manifest matching the crafted files."""
    from rls3_ros.loop.run_dir import MANIFEST, _hash_tree

    m = json.loads((ck / MANIFEST).read_text())
    m["files"] = _hash_tree(str(ck), skip=[MANIFEST])
    (ck / MANIFEST).write_text(json.dumps(m))


def test_crafted_state_files_never_run_a_payload(base, tmp_path):
    env, base_run = base
    run = _copy(base_run, tmp_path / "run")
    marker = tmp_path / "PWNED"
    ck3, ck2 = run / "checkpoints" / "ckpt-003", run / "checkpoints" / "ckpt-002"
    # ckpt-003: the scheduler's arrays file holds a pickled object array, the manifest rewritten to match
    doc = json.loads(_state_file(ck3).read_text()) if _state_file(ck3).suffix == ".json" else {
        "format": 1, "state": {}}
    doc["arrays"] = "scheduler.npz"
    doc["state"]["batch"] = [{"__t": "nd", "k": "a0"}]
    (ck3 / "scheduler.json").write_text(json.dumps(doc))
    np.savez(ck3 / "scheduler.npz", a0=np.array([Payload(marker)], dtype=object), allow_pickle=True)
    # ckpt-002: valid, with pickles planted at every name an earlier version read (never read now)
    planted = pickle.dumps(Payload(marker))
    for f in ("scheduler.pkl", "envs.pkl", "agent/rng.pkl", "agent/replay_buffer.pkl", "agent/mode_sampler.pkl"):
        (ck2 / f).write_bytes(planted)
    (ck2 / "agent" / "model.zip").write_bytes(_sb3_zip_with_payload(marker))
    # old code reads ckpt-003's scheduler.pkl: put the payload there too
    (ck3 / "scheduler.pkl").write_bytes(planted)
    if (run / "checkpoints" / "ckpt-003" / "MANIFEST.json").exists():
        _rewrite_manifest(ck3)
    r = _resume(env, run)
    assert not marker.exists(), "a crafted state file ran its payload"
    assert r.returncode == 0, r.stderr[-3000:]
    said = [line for line in r.stderr.splitlines() if "unreadable" in line]
    assert len(said) == 1 and "ckpt-003" in said[0] and "scheduler.npz does not read without pickle" in said[0], said
    assert said[0].endswith("resuming from ckpt-002")


# -- 3. ownership ----------------------------------------------------------------------------------
@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root (CI runs as root)")
def test_directories_of_another_user_are_refused(base, tmp_path):
    env, base_run = base
    other = 65534  # nobody
    run = _copy(base_run, tmp_path / "run")
    os.chown(run, other, other)
    r = _resume(env, run)
    assert r.returncode == 2, r.stderr[-3000:]
    reasons = _reasons(r.stderr)
    assert len(reasons) == 1 and f"refusing to resume {run}" in reasons[0] and f"uid {other}" in reasons[0], reasons
    os.chown(run, 0, 0)
    # one checkpoint of another user: the one before it is used
    for p in [run / "checkpoints" / "ckpt-003", *(run / "checkpoints" / "ckpt-003").rglob("*")]:
        os.chown(p, other, other, follow_symlinks=False)
    r = _resume(env, run)
    assert r.returncode == 0, r.stderr[-3000:]
    said = [line for line in r.stderr.splitlines() if "unreadable" in line]
    assert len(said) == 1 and f"owned by uid {other}" in said[0] and said[0].endswith("resuming from ckpt-002"), said


# -- 4. a full disk --------------------------------------------------------------------------------
def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir()
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                           capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def _file_size_limit(limit: int):
    def apply():  # a write beyond ``limit`` bytes fails with EFBIG (SIGXFSZ ignored), as a full disk would
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_disk_full_while_saving_is_one_line_exit_2_and_keeps_the_last_checkpoint(base, tmp_path):
    env, base_run = base
    mnt = tmp_path / "small"
    mounted = _mount_tmpfs(mnt, "8m")
    try:
        run = _unfinished(base_run, mnt / "run")
        before = _hashes(run / "checkpoints" / "ckpt-002")
        filler, preexec = mnt / "filler", None
        if mounted:  # leave 48 KB: the next adapter fits, the next checkpoint (~250 KB) does not
            st = os.statvfs(mnt)
            filler.write_bytes(b"\0" * (st.f_bavail * st.f_frsize - 48 * 1024))
        else:  # no mount allowed here: every file the run writes is limited to 100 KB (EFBIG)
            preexec = _file_size_limit(100 * 1024)
        r = _resume(env, run, preexec_fn=preexec)
        assert r.returncode == 2, r.stderr[-3000:]
        assert "Traceback" not in r.stderr, r.stderr[-3000:]
        reasons = _reasons(r.stderr)
        assert len(reasons) == 1, r.stderr[-3000:]
        assert reasons[0].startswith(f"rls3 train: no space left on device while writing {run}"), reasons
        # the previous checkpoint is intact and still the one LATEST names; the failed write left nothing
        assert _latest(run) == "ckpt-002"
        assert _hashes(run / "checkpoints" / "ckpt-002") == before
        assert not [p for p in os.listdir(run / "checkpoints") if ".tmp-" in p]
        # with space again the run resumes from it and finishes
        if mounted:
            filler.unlink()
        r = _resume(env, run)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "checkpoints/ckpt-002: iteration 2" in r.stderr and "unreadable" not in r.stderr
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


# -- 5. leftovers of killed saves ------------------------------------------------------------------
def test_a_killed_save_leaves_a_temp_dir_that_the_next_resume_removes(tmp_path):
    env = _env(tmp_path)
    run = tmp_path / "run"
    victim = [str(TEST_DIR / "reliability_train_victim.py"), str(run)]
    with NodeProcess([*victim, "--fault", "checkpoint:2"], env, "victim", log_dir=tmp_path) as v:
        v.wait_for_output("PAUSE checkpoint", 240)
        v.proc.send_signal(signal.SIGKILL)
        v.proc.wait(timeout=deadline(10))
    ckd, ads = run / "checkpoints", run / "adapters"
    killed = [p for p in os.listdir(ckd) if ".tmp-" in p]
    assert killed, sorted(os.listdir(ckd))  # the kill left the checkpoint's temp dir
    # leftovers of other kinds: a killed adapter write, a replacement killed after its swap, and one
    # that is not ours (another user's: kept)
    (ads / ".iter_009.tmp-1-dead").mkdir()
    (ads / ".iter_009.tmp-1-dead" / "adapter_model.safetensors").write_bytes(b"x" * 10)
    (ckd / ".ckpt-001.old-1-dead").mkdir()
    foreign = ads / ".iter_008.tmp-1-theirs"
    if os.geteuid() == 0:  # only root can make one (CI runs as root)
        foreign.mkdir()
        os.chown(foreign, 65534, 65534)
    with NodeProcess([*victim, "--resume"], env, "resumed", log_dir=tmp_path) as v:
        v.wait_for_output("RESUMED ", 240)
        left_ck, left_ad = sorted(os.listdir(ckd)), sorted(os.listdir(ads))
        assert v.wait(240) == 0, v.output()[-3000:]
    assert "RESUMED " + str(ckd / "ckpt-001") in v.output()
    assert not [p for p in left_ck if p.startswith(".")], left_ck  # the killed save's and the stale .old-
    assert [p for p in left_ad if p.startswith(".")] == ([foreign.name] if foreign.exists() else []), left_ad


# -- the writer and the reader themselves, on real files ---------------------------------------------
def test_atomic_dir_replacement_killed_between_its_renames_is_restored(tmp_path):
    """A kill between "old name -> .old-" and "temp -> name" leaves no directory under the name; the
    next clean-up puts the previous one back, and a failing write leaves the previous one as it was."""
    from rls3_ros.core import atomic_io as A

    target = tmp_path / "iter_003"
    with A.atomic_dir(str(target)) as d:
        Path(d, "w.bin").write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with A.atomic_dir(str(target)) as d:
            Path(d, "w.bin").write_bytes(b"new, half")
            raise RuntimeError("killed")
    assert (target / "w.bin").read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["iter_003"]
    os.rename(target, tmp_path / ".iter_003.old-99-dead")  # where the kill stopped a replacement
    os.utime(tmp_path / ".iter_003.old-99-dead", (1, 1))
    done = A.clean_stale(str(tmp_path))
    assert done == [f"restored {target}"] and (target / "w.bin").read_bytes() == b"old"


def test_a_torn_latest_still_resumes_from_the_newest_checkpoint(base, tmp_path):
    """A zero-length LATEST (a power loss during its replacement before this fix) is not "no
    checkpoint": the newest complete one is used."""
    from rls3_ros.loop.run_dir import RunDir

    _, base_run = base
    run = _copy(base_run, tmp_path / "run")
    (run / "checkpoints" / "LATEST").write_text("")
    rd = RunDir(str(run))
    assert rd.latest_checkpoint() == str(run / "checkpoints" / "ckpt-003")
    assert rd.check_resumable() == str(run / "checkpoints" / "ckpt-003")


def test_state_files_round_trip_the_loop_state_and_refuse_code(tmp_path):
    """Samples, RNG states, tuples, int keys, non-finite floats and tensors round-trip through JSON +
    npz; an object (code) is refused on write, an object array on read."""
    import collections

    import torch

    from rls3_ros.core.safe_state import StateError, dump_state, load_state
    from rls3_ros.core.scene import CameraModel, ObjectState, Sample, SceneState, SpatialRelation

    cam = CameraModel((0.0, 1.0, 2.0), (0.0, 0.0, 0.0, 1.0), 64, 64, 50.0, 50.0, 32.0, 32.0)
    scene = SceneState("s", "kitchen", 3, cam, [ObjectState("a", "cup", "red cup", (1.0, 2.0, np.float32(3.0)))])
    s = Sample("x", np.arange(48, dtype=np.uint8).reshape(4, 4, 3), scene, [SpatialRelation("a", "b", "A", "B", ["left"])])
    rng = np.random.default_rng(5)
    state = {"rng": rng.bit_generator.state, "inflight": (1, [s], [], {"episodes": 2}), "best": -float("inf"),
             "keys": {1: "a", (1, 2): 3}, "buf": collections.deque([{"r": 1.5}], maxlen=4),
             "w": torch.arange(3, dtype=torch.float32), "x": np.float32(0.5)}
    dump_state(str(tmp_path), "st", state)
    back = load_state(str(tmp_path), "st")
    it, batch, replay, counts = back["inflight"]
    assert (it, replay, counts) == (1, [], {"episodes": 2}) and batch[0].scene == scene
    assert batch[0].relations == s.relations and np.array_equal(batch[0].image, s.image)
    assert back["best"] == -float("inf") and back["keys"] == {1: "a", (1, 2): 3} and back["buf"].maxlen == 4
    assert torch.equal(back["w"], state["w"]) and type(back["x"]) is np.float32
    r = np.random.default_rng()
    r.bit_generator.state = back["rng"]
    assert r.random() == np.random.default_rng(5).random()
    with pytest.raises(StateError, match="cannot be stored without pickle"):
        dump_state(str(tmp_path), "bad", {"f": print})
    marker = tmp_path / "PWNED"
    doc = json.loads((tmp_path / "st.json").read_text())
    np.savez(tmp_path / "st.npz", a0=np.array([Payload(marker)], dtype=object), allow_pickle=True)
    (tmp_path / "st.json").write_text(json.dumps(doc))
    with pytest.raises(StateError, match="does not read without pickle"):
        load_state(str(tmp_path), "st")
    assert not marker.exists()
