"""Issue 26 item 8: a node started the way a script starts a background job stops on SIGINT.

A shell starts ``node &`` with SIGINT ignored, and a parent (a supervisor, a Python program with a
blocked signal mask) can hand SIGINT and SIGTERM down blocked. The ``spatial_query`` node is
started here with SIGINT ignored *and* SIGINT/SIGTERM blocked (``preexec_fn``), serves real
queries over loopback DDS, and must then exit on ``kill -INT`` (or ``kill -TERM``) with exit code
0 and without a traceback. Deadlines are generous; nothing is timed.
"""

from __future__ import annotations

import signal

import numpy as np
import pytest

from reliability_common import apply_ros_env, call_service, node_env
from ros_harness import BackgroundSpinner, NodeProcess

pytestmark = pytest.mark.timeout(240)


def _like_a_background_job() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_node_started_with_sigint_ignored_and_blocked_stops_on_the_signal_after_serving_calls(tmp_path, sig):
    from rls3_msgs.srv import SpatialQuery

    from rls3_ros.ros.client import SpatialQueryClient

    env = node_env(tmp_path)
    mp = pytest.MonkeyPatch()
    apply_ros_env(env, mp)
    args = ["-m", "rls3_ros.ros.nodes.spatial_query", "--ros-args", "-p", "model:=grounded", "-p", "torch_threads:=1",
            "-p", "follow_adapter_topic:=false"]
    try:
        with NodeProcess(args, env, "spatial_query", log_dir=tmp_path, preexec_fn=_like_a_background_job) as proc:
            spinner = BackgroundSpinner("signal_client")
            try:
                client = spinner.node.create_client(SpatialQuery, "/spatial_query/query")
                proc.wait_for_output("model ready", 120)
                assert client.wait_for_service(timeout_sec=30)
                img = np.full((64, 64, 3), 200, np.uint8)
                img[16:32, 8:20] = (220, 30, 30)
                img[16:32, 44:56] = (30, 60, 220)
                for _ in range(3):
                    r = call_service(client, SpatialQueryClient.make_request("where", "red box", "blue box", image=img))
                    assert r is not None and r.success, getattr(r, "message", "no answer")
            finally:
                spinner.close()
            proc.proc.send_signal(sig)
            code = proc.wait(60)
            out = proc.output()
            assert code == 0, f"exit code {code}:\n{out[-2000:]}"
            assert "Traceback" not in out, out[-2000:]
    finally:
        mp.undo()
