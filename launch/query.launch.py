"""Query graph of rls3_ros for a real ROS 2 install (``ros2 launch rls3_ros query.launch.py``).

The nodes come from ``rls3_ros.ros.graph_spec`` (``query_graph``), the same description
``rls3 launch query`` starts, from the same parameter file (config/query.yaml): a spatial_query
node answering SpatialQuery requests on a given image or on the latest frame of a camera topic
(remap ``image_topic`` to your robot's camera), and optionally a sim_bridge as a demo camera.

Arguments (each as ``rls3 launch query --<name>``):
  params_file (share/rls3_ros/config/query.yaml)  ROS parameter file
  namespace ("")          namespace of the graph
  adapter ("")            LoRA adapter directory to serve ("" = from the file / base model)
  image_topic (image_raw) camera topic of the robot (remapped onto the node's image_raw)
  scene_topic (scene_state) scene-state topic (object names and boxes), if any
  with_sim (false)        also start a sim_bridge publishing image_raw / scene_state
  set ("")                space-separated NODE.PARAM=VALUE overrides
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration

from rls3_ros.ros.graph_spec import apply_node_sets, bool_arg, launch_actions, parse_set, query_graph


def _nodes(context, *args, **kwargs):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    try:
        specs = query_graph(with_sim=bool_arg(arg("with_sim")), namespace=arg("namespace"), adapter=arg("adapter"),
                            image_topic=arg("image_topic"), scene_topic=arg("scene_topic"))
        apply_node_sets(specs, [parse_set(item) for item in arg("set").split()])
    except ValueError as e:
        raise RuntimeError(str(e)) from None
    return launch_actions(specs, [arg("params_file")])


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory("rls3_ros"), "config", "query.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=default_params, description="ROS parameter file"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the graph"),
        DeclareLaunchArgument("adapter", default_value="", description="LoRA adapter directory"),
        DeclareLaunchArgument("image_topic", default_value="image_raw", description="camera topic"),
        DeclareLaunchArgument("scene_topic", default_value="scene_state", description="scene state topic"),
        DeclareLaunchArgument("with_sim", default_value="false", description="start a sim_bridge as demo camera"),
        DeclareLaunchArgument("set", default_value="", description="NODE.PARAM=VALUE overrides (space-separated)"),
        OpaqueFunction(function=_nodes),
    ])
