"""Training graph of rls3_ros for a real ROS 2 install (``ros2 launch rls3_ros training.launch.py``).

The nodes, namespaces, parameters, remappings and respawn come from ``rls3_ros.ros.graph_spec``
(``training_graph``), the same description ``rls3 launch training`` starts, from the same
parameter file (config/training.yaml):
  - ``bridges`` sim_bridge nodes (namespaces sim0..simN-1 when N > 1),
  - caption_oracle, vlm_trainer, rl_sampler (the agent + the RLS3 scheduler).
The launch ends when rl_sampler finishes its budget (exit 0) or any node that is not respawned exits.

Arguments (each as ``rls3 launch training --<name>``):
  params_file (share/rls3_ros/config/training.yaml)  ROS parameter file for every node
  bridges (1)        number of sim_bridge nodes
  namespace ("")     namespace of the whole graph (every name inside is relative)
  agent ("")         override rl_sampler's agent (sac | ppo | random | miner | upper | teacher); "" = from the file
  run_dir ("")       run directory of rl_sampler ("" = runs/<timestamp>); adapters go to <run_dir>/adapters
  resume ("")        a run directory to continue from its last checkpoint (as ``rls3 launch training
                     --resume``): rl_sampler gets run_dir + resume:=true + the run's settings from its
                     config.yaml, vlm_trainer the checkpoint's adapter, the bridges the run's count;
                     a directory without a checkpoint stops the launch with the reason
  image_topic (image_raw)  remap of the bridges' (and the oracle's) camera topic
  respawn_bridges (false)  restart a sim_bridge that dies; rl_sampler waits for it
  set ("")           space-separated NODE.PARAM=VALUE overrides, e.g. "rl_sampler.budget_valid_samples=200"
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration

from rls3_ros.ros.graph_spec import apply_node_sets, bool_arg, launch_actions, parse_set, training_graph


def _nodes(context, *args, **kwargs):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    resumed = None
    if arg("resume"):
        from rls3_ros.ros.launcher import resume_info

        try:
            resumed = resume_info(arg("resume"))
        except ValueError as e:
            raise RuntimeError(f"cannot resume: {e}") from None
    try:
        specs = training_graph(bridges=int(arg("bridges")), namespace=arg("namespace"), image_topic=arg("image_topic"),
                               agent=arg("agent"), run_dir=arg("run_dir"), resume=resumed,
                               respawn_bridges=bool_arg(arg("respawn_bridges")))
        apply_node_sets(specs, [parse_set(item) for item in arg("set").split()])
    except ValueError as e:
        raise RuntimeError(str(e)) from None
    return launch_actions(specs, [arg("params_file")])


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory("rls3_ros"), "config", "training.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=default_params, description="ROS parameter file"),
        DeclareLaunchArgument("bridges", default_value="1", description="number of sim_bridge nodes"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the whole graph"),
        DeclareLaunchArgument("agent", default_value="", description="rl_sampler's agent ('' = file)"),
        DeclareLaunchArgument("run_dir", default_value="", description="rl_sampler run directory"),
        DeclareLaunchArgument("resume", default_value="",
                              description="run directory to continue from its last checkpoint ('' = a new run)"),
        DeclareLaunchArgument("image_topic", default_value="image_raw", description="camera topic remap"),
        DeclareLaunchArgument("respawn_bridges", default_value="false", description="restart a dying sim_bridge"),
        DeclareLaunchArgument("set", default_value="", description="NODE.PARAM=VALUE overrides (space-separated)"),
        OpaqueFunction(function=_nodes),
    ])
