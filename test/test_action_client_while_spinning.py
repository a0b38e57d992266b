"""Action clients created while another thread spins their node must not end that spin.

rclpy 9 registers an ``ActionClient`` with its node before the client's lock exists; an
executor spinning in another thread can then fail on the half-built client and stop for
good (on CI this made every later goal of a test module time out)."""

from __future__ import annotations

import threading

from ros_harness import BackgroundSpinner, deadline

CLIENTS = 300


def _spin_survives(client_class, destroy: bool = False) -> bool:
    """Create (and with ``destroy`` at once destroy) ``CLIENTS`` action clients on a spinning node;
    then does the executor still run callbacks?"""
    from rls3_msgs.action import FineTune

    spinner = BackgroundSpinner("action_client_race")
    try:
        clients = []
        for i in range(CLIENTS):
            client = client_class(spinner.node, FineTune, f"/race/fine_tune_{i}")
            client.destroy() if destroy else clients.append(client)
        fired = threading.Event()
        timer = spinner.node.create_timer(0.01, fired.set)
        try:
            return fired.wait(deadline(10.0))
        finally:
            spinner.node.destroy_timer(timer)
    finally:
        spinner.close()


def test_spin_safe_action_client_keeps_the_executor_alive(ros_env):
    from rls3_ros.ros.rosutil import SpinSafeActionClient

    assert _spin_survives(SpinSafeActionClient), "the executor stopped running callbacks"


def test_spin_safe_action_client_still_works_as_a_client(ros_env):
    """The kept lock is the one the client uses: a goal to a missing server is simply not ready."""
    from rls3_msgs.action import FineTune

    from rls3_ros.ros.rosutil import SpinSafeActionClient

    spinner = BackgroundSpinner("action_client_use")
    try:
        ac = SpinSafeActionClient(spinner.node, FineTune, "/nobody/fine_tune")
        assert isinstance(ac._lock, type(threading.Lock()))
        assert not ac.wait_for_server(timeout_sec=0.2)
        assert not ac.server_is_ready()
    finally:
        spinner.close()



def test_destroying_a_spin_safe_action_client_keeps_the_executor_alive(ros_env):
    from rls3_ros.ros.rosutil import SpinSafeActionClient

    assert _spin_survives(SpinSafeActionClient, destroy=True), "the executor stopped running callbacks"
