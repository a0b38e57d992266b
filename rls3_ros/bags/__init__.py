"""rosbag2 bag I/O for the project (via ``rosbags``), no ROS client library.

:mod:`.typestore` (message definitions), :mod:`.bagio` (reader, atomic writer),
:mod:`.convert` (rosbags messages <-> core types; images through :mod:`rls3_ros.core.image_codec`),
:mod:`.sample_reader`, :mod:`.dataset_export`, :mod:`.images` and :mod:`.bag_cli`
(``rls3 bag``). Nothing here imports rclpy or ``rls3_ros.ros.nodes`` (a test checks it); the
rclpy parts, ``rls3 record`` / ``rls3 replay``, live in :mod:`rls3_ros.ros`.
"""
