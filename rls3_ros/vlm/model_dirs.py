"""Where project models live: the cache ($RLS3_MODEL_DIR), the source tree's models/, installed shares."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List

REPO_MODELS = Path(__file__).resolve().parents[2] / "models"


def model_dir() -> Path:
    """Root of cached project models: ``$RLS3_MODEL_DIR`` or ``~/.cache/rls3_ros/models``."""
    env = os.environ.get("RLS3_MODEL_DIR", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rls3_ros" / "models"


def default_dirs(name: str) -> List[Path]:
    """Where model directory ``name`` may be, in order: ``model_dir()/<name>``; models/<name> of the
    source tree; then, for a non-editable install (pip / colcon, setup.py data_files),
    <sys.prefix>/share/rls3_ros/models/<name> and <ament share of rls3_ros>/models/<name> when
    ament_index_python is importable."""
    dirs = [model_dir() / name, REPO_MODELS / name, Path(sys.prefix) / "share" / "rls3_ros" / "models" / name]
    try:
        from ament_index_python.packages import get_package_share_directory

        dirs.append(Path(get_package_share_directory("rls3_ros")) / "models" / name)
    except Exception:  # not importable, no AMENT_PREFIX_PATH, or rls3_ros not in the ament index
        pass
    unique: List[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique
