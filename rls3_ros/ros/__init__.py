"""The ROS-touching code (rclpy): bag recorder and replayer, the test/benchmark stream
publisher and probe, and their rclpy helpers (:mod:`.rosutil`).

``rls3_ros.bags`` is the rclpy-free bag I/O these build on (reading, writing, typestore,
message conversion, dataset export, sample reader); nothing there imports this package.
"""
