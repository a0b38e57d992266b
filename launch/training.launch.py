"""Training graph of rls3_ros for a real ROS 2 install (``ros2 launch rls3_ros training.launch.py``).

The same graph as ``rls3 launch training`` (rls3_ros/graph_launcher.py), from the same
parameter file (config/training.yaml):
  - ``bridges`` sim_bridge nodes (namespaces sim0..simN-1 when N > 1),
  - caption_oracle, vlm_trainer, rl_sampler (the agent + the RLS3 scheduler).
The launch ends when rl_sampler finishes its budget (it exits with code 0).

Arguments:
  params_file (share/rls3_ros/config/training.yaml)  ROS parameter file for every node
  bridges (1)        number of sim_bridge nodes
  namespace ("")     namespace of the whole graph
  agent ("")         override rl_sampler's agent (sac | ppo | random | miner); "" = from the file
  run_dir ("")       run directory of rl_sampler ("" = runs/<timestamp>); adapters go to <run_dir>/adapters
  resume ("")        a run directory to continue from its last checkpoint (as ``rls3 launch training
                     --resume``): rl_sampler gets run_dir + resume:=true + the run's settings from its
                     config.yaml, vlm_trainer the checkpoint's adapter, the bridges the run's count;
                     a directory without a checkpoint stops the launch with the reason
  image_topic (image_raw)  remap of the bridges' camera topic
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, GroupAction, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node, PushRosNamespace


def _nodes(context, *args, **kwargs):
    params_file = LaunchConfiguration("params_file").perform(context)
    bridges = int(LaunchConfiguration("bridges").perform(context))
    agent = LaunchConfiguration("agent").perform(context)
    run_dir = LaunchConfiguration("run_dir").perform(context)
    image_topic = LaunchConfiguration("image_topic").perform(context)
    resume = LaunchConfiguration("resume").perform(context)
    resumed = None
    if resume:
        from rls3_ros.graph_launcher import resume_info

        try:
            resumed = resume_info(resume)
        except ValueError as e:
            raise RuntimeError(f"cannot resume: {e}") from None
        run_dir, bridges = resumed.run_dir, resumed.n_envs
    if bridges < 1:
        raise RuntimeError("bridges must be >= 1")
    namespaces = [f"sim{i}" for i in range(bridges)] if bridges > 1 else [""]
    actions = []
    for i, ns in enumerate(namespaces):
        actions.append(Node(
            package="rls3_ros", executable="sim_bridge", name="sim_bridge", namespace=ns or None,
            parameters=[params_file, {"seed": 100 + i}], remappings=[("image_raw", image_topic)],
            output="screen", emulate_tty=True,
        ))
    trainer_params = [params_file]
    sampler_params = [params_file, {"bridge_namespaces": namespaces}]
    if run_dir:
        trainer_params.append({"adapter_dir": os.path.join(run_dir, "adapters")})
        sampler_params.append({"run_dir": run_dir})
    if resumed is not None:  # the run's own settings, from its config.yaml
        sampler_params.append({**resumed.sampler_values, "resume": True})
        if resumed.adapter:
            trainer_params.append({"adapter": resumed.adapter})
    if agent:
        sampler_params.append({"agent": agent})
    actions.append(Node(package="rls3_ros", executable="caption_oracle", name="caption_oracle",
                        parameters=[params_file], remappings=[("image_raw", image_topic)], output="screen"))
    actions.append(Node(package="rls3_ros", executable="vlm_trainer", name="vlm_trainer",
                        parameters=trainer_params, output="screen"))
    sampler = Node(package="rls3_ros", executable="rl_sampler", name="rl_sampler",
                   parameters=sampler_params, output="screen")
    actions.append(sampler)
    # the run is over when rl_sampler exits (budget reached or failure): stop the graph
    actions.append(RegisterEventHandler(OnProcessExit(
        target_action=sampler, on_exit=[EmitEvent(event=Shutdown(reason="rl_sampler finished"))])))
    return actions


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory("rls3_ros"), "config", "training.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=default_params, description="ROS parameter file"),
        DeclareLaunchArgument("bridges", default_value="1", description="number of sim_bridge nodes"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the whole graph"),
        DeclareLaunchArgument("agent", default_value="", description="sac | ppo | random | miner ('' = file)"),
        DeclareLaunchArgument("run_dir", default_value="", description="rl_sampler run directory"),
        DeclareLaunchArgument("resume", default_value="",
                              description="run directory to continue from its last checkpoint ('' = a new run)"),
        DeclareLaunchArgument("image_topic", default_value="image_raw", description="camera topic remap"),
        GroupAction([
            PushRosNamespace(LaunchConfiguration("namespace")),
            OpaqueFunction(function=_nodes),
        ]),
    ])
