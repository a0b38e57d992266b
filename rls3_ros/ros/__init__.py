"""Everything that talks ROS 2 (rclpy): the nodes (:mod:`.nodes`, one thin node per module plus
message conversions), the query client, the bag recorder, replayer, stream publisher and probe
(with their rclpy helpers in :mod:`.rosutil`), the graph spec and ``rls3 launch``
(:mod:`.graph_spec`, :mod:`.launcher`) and the loopback isolation environment (:mod:`.isolation`).

Below it, nothing imports this package (``.importlinter``): ``rls3_ros.bags`` is the rclpy-free
bag I/O these build on, and the science (core, sim, captions, vlm, loop) imports no ROS.
"""
