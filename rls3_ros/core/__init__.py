"""Core types shared by every layer (pure Python, no ROS)."""
