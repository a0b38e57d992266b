"""The README's colcon build, run as written: both packages built with colcon (from PyPI, pinned
in requirements.txt) into a temporary workspace, then ``spatial_query`` started from that install
(not from the venv's editable install of the source tree) and queried by a plain rclpy client.

The workspace's ``src/rls3_ros`` is the repository's tracked files as they are in the working
tree (what ``git clone`` gives on a clean checkout, and what CI has); the build, the sourcing and
the node start are the README's ``colcon-venv`` block, extracted from README.md and run in bash
with ``WS`` and ``VENV`` set and nothing else inherited that could point at the source tree
(no PYTHONPATH, no LD_LIBRARY_PATH, a fresh ROS wheel bootstrap).

Which ``rls3_msgs`` the node runs, read from ``/proc/<pid>/maps``: every ``rls3_msgs`` library it maps
is the install's, including the type-support implementations (``..._typesupport_fastrtps_c``,
``..._introspection_c``) that the rosidl dispatcher ``dlopen``s by bare file name. The PyPI ROS wheels
rebuild ``LD_LIBRARY_PATH`` in a random order at interpreter start, and the venv holds its own
``rls3_msgs`` (``make setup`` builds it there), so a second process in the same shell puts the venv's
``lib/`` first on purpose and must map the install's libraries all the same.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ros_harness import BackgroundSpinner, poll_until, spin_until_future
from rls3_ros.ros.isolation import isolated_ros_env

pytestmark = pytest.mark.timeout(900)
REPO = Path(__file__).resolve().parent.parent
VENV = Path(sys.prefix)


# Run in the README's shell after ``source install/setup.bash``: re-executes itself once with the
# venv's lib/ first on LD_LIBRARY_PATH (the order that used to pick the venv's type-support
# libraries), uses an rls3_msgs message, service and action, and prints what it imported and mapped.
PROBE = r"""
import json, os, sys
venv_lib = os.path.join(sys.prefix, "lib")
if not os.environ.get("RLS3_PROBE_VENV_LIB_FIRST"):
    rest = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p and p != venv_lib]
    os.execve(sys.executable, sys.orig_argv, dict(os.environ, RLS3_PROBE_VENV_LIB_FIRST="1",
                                                  LD_LIBRARY_PATH=os.pathsep.join([venv_lib] + rest)))
import rclpy
from rclpy.action import ActionClient
import rls3_msgs, rls3_ros, rls3_ros.vlm.grounded as g
from rls3_msgs.action import FineTune
from rls3_msgs.msg import SceneState
from rls3_msgs.srv import SpatialQuery
rclpy.init()
node = rclpy.create_node("colcon_probe")
node.create_publisher(SceneState, "colcon_probe_scene", 1)
node.create_client(SpatialQuery, "colcon_probe_query")
ActionClient(node, FineTune, "colcon_probe_fine_tune")
maps = sorted({l.split()[-1] for l in open("/proc/self/maps") if "rls3_msgs" in l.split()[-1]})
print("PROBE " + json.dumps({"ld_first": os.environ["LD_LIBRARY_PATH"].split(os.pathsep)[0], "maps": maps,
                             "rls3_ros": rls3_ros.__file__, "rls3_msgs": rls3_msgs.__file__,
                             "model": str(g.load().base_spec)}))
node.destroy_node()
rclpy.shutdown()
"""


def rls3_msgs_mapped(maps_text: str) -> list:
    """The files named ``*rls3_msgs*`` (libraries, Python extensions) mapped in a process."""
    return sorted({l.split()[-1] for l in maps_text.splitlines() if "rls3_msgs" in l.split()[-1]})


def assert_all_from(loaded: list, prefix: Path, what: str) -> None:
    """Every rls3_msgs file ``loaded`` lies under ``prefix``, and the type-support dispatch ran there."""
    assert loaded and all(l.startswith(str(prefix) + "/") for l in loaded), f"{what}: {loaded}"
    names = {Path(l).name for l in loaded}
    for lib in ("rosidl_generator_c", "rosidl_typesupport_c", "rosidl_typesupport_fastrtps_c",
                "rosidl_typesupport_introspection_c"):
        assert f"librls3_msgs__{lib}.so" in names, f"{what}: no librls3_msgs__{lib}.so in {loaded}"
    assert any("site-packages/rls3_msgs/" in l for l in loaded), f"{what}: no rls3_msgs Python extension: {loaded}"


def readme_block(name: str) -> str:
    """The bash code of the README's fenced block between ``<!-- name:start -->`` and ``:end``."""
    text = (REPO / "README.md").read_text()
    m = re.search(rf"<!-- {name}:start -->\s*```bash\n(.*?)```\s*<!-- {name}:end -->", text, re.S)
    assert m, f"README.md has no ```bash block between <!-- {name}:start --> and <!-- {name}:end -->"
    return m.group(1)


def copy_tracked_tree(dest: Path) -> None:
    """The repository's tracked files (working-tree contents) under ``dest``, as a clone would hold them."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    for f in files:
        if not f:
            continue
        src = REPO / os.fsdecode(f)
        if not src.is_file():  # deleted in the working tree
            continue
        dst = dest / os.fsdecode(f)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(src.read_bytes())
        dst.chmod(src.stat().st_mode & 0o777)


def clean_env(root: Path, ws: Path) -> dict:
    """A newcomer's shell: system PATH, the isolated ROS settings, WS and VENV; nothing of ours."""
    base = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8",
            "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    env = isolated_ros_env(root, base=base)
    env.update(WS=str(ws), VENV=str(VENV), COLCON_HOME=str(root / "colcon_home"), OMP_NUM_THREADS="1",
               RLS3_MODEL_DIR=str(root / "no_models"),  # the model must come from the install's share/
               RLS3_CACHE=str(root / "cache"))
    return env


def test_readme_colcon_build_installs_a_node_that_answers(tmp_path):
    block = readme_block("colcon-venv")
    lines = [l for l in block.splitlines() if l.strip() and not l.lstrip().startswith("#")]
    assert any(l.startswith("colcon build") for l in lines), block
    assert lines[-1].startswith("install/rls3_ros/lib/rls3_ros/spatial_query") and "#" not in lines[-1], \
        "the block must end by starting the node (no trailing comment: the test appends parameters)"
    ws = tmp_path / "ws"
    copy_tracked_tree(ws / "src" / "rls3_ros")
    env = clean_env(tmp_path, ws)
    # the node is the block's last command: add this test's own parameters to it
    script = block.rstrip() + " -p torch_threads:=1 -p image_qos:=reliable\n"
    log_path = tmp_path / "colcon_readme.log"
    t0 = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["nice", "-n", "10", "bash", "-c", script], cwd=tmp_path, env=env,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    out = lambda: log_path.read_text(errors="replace")  # noqa: E731
    node_pid = None
    try:
        def built():
            if proc.poll() is not None:
                raise AssertionError(f"the README block exited ({proc.returncode}):\n{out()[-4000:]}")
            return "Summary: 2 packages finished" in out()

        poll_until(built, 800, "colcon build of the README block", interval=0.5)
        build_s = time.monotonic() - t0
        def ready():
            if proc.poll() is not None:
                raise AssertionError(f"the installed node exited ({proc.returncode}):\n{out()[-4000:]}")
            return "model ready: model='grounded'" in out()

        poll_until(ready, 120, "the installed node's model", interval=0.2)
        assert "Failed   <<<" not in out() and "Traceback" not in out(), out()[-4000:]

        # the node process: started from the install, with the install on its paths
        def node_process():
            for p in Path("/proc").iterdir():
                if p.name.isdigit():
                    try:
                        cmd = (p / "cmdline").read_bytes().split(b"\0")
                        if os.getpgid(int(p.name)) == proc.pid and any(b"lib/rls3_ros/spatial_query" in c for c in cmd):
                            return int(p.name)
                    except (OSError, ProcessLookupError):
                        continue
            return None

        node_pid = poll_until(node_process, 20, "the spatial_query process")
        penv = dict(kv.split("=", 1) for kv in (Path(f"/proc/{node_pid}/environ").read_bytes().decode(errors="replace")
                                                 .split("\0")) if "=" in kv)
        pypath = penv.get("PYTHONPATH", "").split(os.pathsep)
        assert pypath[:2] == [str(ws / "install" / p / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
                                  / "site-packages") for p in ("rls3_ros", "rls3_msgs")], pypath
        assert not any(str(REPO) in p for p in pypath), pypath
        install_msgs = ws / "install" / "rls3_msgs"
        # the same shell, with the venv's lib/ first on LD_LIBRARY_PATH: still the install's rls3_msgs
        (tmp_path / "colcon_probe.py").write_text(PROBE)
        probe = subprocess.run(["bash", "-c", f"source install/setup.bash && python {tmp_path / 'colcon_probe.py'}"],
                               cwd=ws, env={**env, "PATH": f"{VENV}/bin:/usr/bin:/bin"}, capture_output=True,
                               text=True, timeout=120)
        assert probe.returncode == 0, probe.stderr[-4000:]
        found = [l for l in probe.stdout.splitlines() if l.startswith("PROBE ")]
        assert found, probe.stdout[-4000:] + probe.stderr[-4000:]
        seen = json.loads(found[-1][len("PROBE "):])
        assert seen["ld_first"] == str(VENV / "lib"), seen
        assert_all_from(seen["maps"], install_msgs, f"probe with {seen['ld_first']} first on LD_LIBRARY_PATH")
        assert seen["rls3_ros"].startswith(str(ws / "install" / "rls3_ros")), seen
        assert seen["rls3_msgs"] == str(install_msgs / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
                                        / "site-packages" / "rls3_msgs" / "__init__.py"), seen
        assert str(ws / "install" / "rls3_ros" / "share" / "rls3_ros" / "models" / "grounded") in seen["model"], seen

        # a plain rclpy client in this (test) process asks the installed node
        for k, v in env.items():
            if k.startswith(("ROS_", "FASTDDS", "RMW_")):
                os.environ[k] = v
        from rls3_msgs.srv import SpatialQuery
        from rls3_ros.core.image_codec import numpy_to_image_msg

        spinner = BackgroundSpinner("colcon_test_client")
        try:
            client = spinner.node.create_client(SpatialQuery, "/spatial_query/query")
            assert client.wait_for_service(timeout_sec=30)
            img = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
            req = SpatialQuery.Request(query_type="where", subject="red mug", reference="blue vase",
                                       image=numpy_to_image_msg(img, "rgb8"))
            r = spin_until_future(client.call_async(req), 60, "the installed node's answer")
            assert r.success, r.message
            assert r.terms and r.answer.startswith("The red mug is")
            assert r.subject_location.found and r.reference_location.found
            assert r.subject_location.box.width > 0 and 0 <= r.subject_location.pixel.x < 160
        finally:
            spinner.close()
        # what the node mapped after answering (the type-support dispatch has run), whatever order
        # the wheels' start-up hook gave its LD_LIBRARY_PATH
        node_order = [p for p in penv.get("LD_LIBRARY_PATH", "").split(os.pathsep)  # the dirs holding an rls3_msgs
                      if p and (Path(p) / "librls3_msgs__rosidl_typesupport_c.so").is_file()]
        assert_all_from(rls3_msgs_mapped(Path(f"/proc/{node_pid}/maps").read_text()), install_msgs,
                        f"the installed node (LD_LIBRARY_PATH order {node_order})")
        print(f"colcon build of the README block: {build_s:.0f} s; node LD_LIBRARY_PATH order {node_order}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
