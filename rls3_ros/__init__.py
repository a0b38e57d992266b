"""rls3_ros: RLS3 (RL-based synthetic sample selection) for spatial VLMs on ROS 2.

Layers: the science (scene types, simulator backends, caption oracle, VLMs, RL env,
scheduler) lives in plain Python modules with no ROS import; ``rls3_ros.ros.nodes`` holds
thin rclpy nodes that convert messages to these types and call the science.
"""

__version__ = "0.1.0"
