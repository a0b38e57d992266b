"""Query graph of rls3_ros for a real ROS 2 install (``ros2 launch rls3_ros query.launch.py``).

The same graph as ``rls3 launch query`` (rls3_ros/graph_launcher.py), from the same
parameter file (config/query.yaml): a spatial_query node answering SpatialQuery requests on
a given image or on the latest frame of a camera topic (remap ``image_topic`` to your
robot's camera), and optionally a sim_bridge as a demo camera.

Arguments:
  params_file (share/rls3_ros/config/query.yaml)  ROS parameter file
  namespace ("")          namespace of the graph
  adapter ("")            LoRA adapter directory to serve ("" = from the file / base model)
  image_topic (image_raw) camera topic of the robot (remapped onto the node's image_raw)
  scene_topic (scene_state) scene-state topic (object names and boxes), if any
  with_sim (false)        also start a sim_bridge publishing image_raw / scene_state
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, GroupAction, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node, PushRosNamespace


def _nodes(context, *args, **kwargs):
    params_file = LaunchConfiguration("params_file").perform(context)
    adapter = LaunchConfiguration("adapter").perform(context)
    params = [params_file] + ([{"adapter": adapter}] if adapter else [])
    remaps = [("image_raw", LaunchConfiguration("image_topic")), ("scene_state", LaunchConfiguration("scene_topic"))]
    return [
        Node(package="rls3_ros", executable="sim_bridge", name="sim_bridge", parameters=[params_file],
             remappings=remaps, output="screen", condition=IfCondition(LaunchConfiguration("with_sim"))),
        Node(package="rls3_ros", executable="spatial_query", name="spatial_query", parameters=params,
             remappings=remaps, output="screen"),
    ]


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory("rls3_ros"), "config", "query.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=default_params, description="ROS parameter file"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the graph"),
        DeclareLaunchArgument("adapter", default_value="", description="LoRA adapter directory"),
        DeclareLaunchArgument("image_topic", default_value="image_raw", description="camera topic"),
        DeclareLaunchArgument("scene_topic", default_value="scene_state", description="scene state topic"),
        DeclareLaunchArgument("with_sim", default_value="false", description="start a sim_bridge as demo camera"),
        GroupAction([
            PushRosNamespace(LaunchConfiguration("namespace")),
            OpaqueFunction(function=_nodes),
        ]),
    ])
