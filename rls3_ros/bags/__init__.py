"""rosbag2 record / replay / read for the project (via ``rosbags``).

Pure-Python parts (no rclpy): :mod:`.typestore`, :mod:`.bagio`, :mod:`.convert`,
:mod:`.sample_reader`, :mod:`.dataset_export`, :mod:`.images`. ROS parts (rclpy):
:mod:`.recorder` (``rls3 record``) and :mod:`.replayer` (``rls3 replay``).
"""
