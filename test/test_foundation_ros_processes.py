"""Real rclpy processes over loopback DDS: a sample crosses from a publisher process to a
subscriber process; a service process answers a client process."""

import sys
from pathlib import Path

from programs.sample_factory import digest, make_sample
from ros_harness import NodeProcess

PROGRAMS = Path(__file__).resolve().parent / "programs"


def program(name):
    return str(PROGRAMS / name)


def test_captioned_sample_crosses_processes(ros_env):
    expected = make_sample()
    with NodeProcess([program("sample_subscriber.py")], ros_env, "sub") as sub, \
            NodeProcess([program("sample_publisher.py")], ros_env, "pub") as pub:
        m = sub.wait_for_output(r"RECEIVED (.*)", timeout=60)
        assert pub.alive()
    line = m.group(1)
    assert f"sha={digest(expected.image)}" in line
    assert "shape=(224, 224, 3)" in line
    assert "stamp=1700000000.123456789" in line
    assert "The red mug is to the left of the lamp." in line
    assert "objects=2" in line


def test_service_process_answers_client_process(ros_env, tmp_path):
    adapter = tmp_path / "adapter_a"
    adapter.mkdir()
    with NodeProcess([program("adapter_service.py")], ros_env, "srv") as srv:
        srv.wait_for_output("SERVICE READY", timeout=60)
        with NodeProcess([program("adapter_client.py"), str(adapter), "/no/such/dir", ""], ros_env, "cli") as cli:
            assert cli.wait(timeout=60) == 0, cli.output()
            out = cli.output()
        assert srv.alive()
    lines = [l for l in out.splitlines() if l.startswith("ANSWER")]
    assert len(lines) == 3, out
    assert f"success=True active={str(adapter)!r}" in lines[0]
    assert "success=False" in lines[1] and "no adapter directory" in lines[1]
    assert str(adapter) in lines[1]  # the failed call kept the previous adapter
    assert "success=True active=''" in lines[2]


def test_isolated_runs_use_their_own_domain(ros_env, tmp_path):
    from rls3_ros.ros.isolation import isolated_ros_env

    other = isolated_ros_env(tmp_path / "other")
    assert other["ROS_DOMAIN_ID"] != ros_env["ROS_DOMAIN_ID"]
    assert ros_env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert Path(ros_env["ROS_LOG_DIR"]).is_relative_to(tmp_path)
    assert "_ROS_WHEELS_BOOTSTRAP_COMPLETE" not in ros_env
