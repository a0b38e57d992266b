"""Where project models live: the cache ($RLS3_MODEL_DIR), the source tree's models/, installed shares."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List

from rls3_ros.core.share_dir import SOURCE_ROOT, package_roots

REPO_MODELS = SOURCE_ROOT / "models"


def model_dir() -> Path:
    """Root of cached project models: ``$RLS3_MODEL_DIR`` or ``~/.cache/rls3_ros/models``."""
    env = os.environ.get("RLS3_MODEL_DIR", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rls3_ros" / "models"


def default_dirs(name: str) -> List[Path]:
    """Where model directory ``name`` may be, in order: ``model_dir()/<name>``; models/<name> of the
    source tree; then, for a non-editable install (pip / colcon, setup.py data_files),
    <share>/rls3_ros/models/<name> of each ``$AMENT_PREFIX_PATH`` prefix and of <sys.prefix>
    (``rls3_ros.core.share_dir``)."""
    dirs = [model_dir() / name] + [root / "models" / name for root in package_roots()]
    unique: List[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique
