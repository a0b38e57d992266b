"""rls3_ros: RL-based synthetic sample selection for spatial VLMs, as a ROS 2 package."""
import os
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "rls3_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        # YAML parameters and the Fast DDS localhost profile (rls3_ros.ros.isolation finds it there)
        (f"share/{PACKAGE}/config", sorted(glob("config/*.yaml") + glob("config/*.xml"))),
        # the default grounded base model, found by rls3_ros.vlm.model_dirs.default_dirs()
        # after a non-editable install (pip install . / colcon build)
        (f"share/{PACKAGE}/models/grounded", sorted(f for f in glob("models/grounded/*") if os.path.isfile(f))),
        # the query server's default (model: grounded:serving), found the same way
        (f"share/{PACKAGE}/models/grounded_serving",
         sorted(f for f in glob("models/grounded_serving/*") if os.path.isfile(f))),
    ],
    # runtime dependencies: requirements.txt (pinned pip wheels) and package.xml (rosdep keys
    # + the pip-only list); test/test_packaging.py checks both against the code's imports
    install_requires=["setuptools", "pydantic>=2"],
    zip_safe=False,
    maintainer="rls3_ros developers",
    maintainer_email="rls3@example.com",
    description="RLS3: RL-selected synthetic samples to fine-tune spatial VLMs, for ROS 2.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "rls3 = rls3_ros.cli.main:main",
            "sim_bridge = rls3_ros.ros.nodes.sim_bridge:main",
            "caption_oracle = rls3_ros.ros.nodes.caption_oracle:main",
            "rl_sampler = rls3_ros.ros.nodes.rl_sampler:main",
            "vlm_trainer = rls3_ros.ros.nodes.vlm_trainer:main",
            "spatial_query = rls3_ros.ros.nodes.spatial_query:main",
        ],
    },
)
