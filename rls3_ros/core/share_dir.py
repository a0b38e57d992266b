"""Where the package's data files are: the source tree, else the installed share directories.

Data that ships beside the code (``config/``, ``models/``, ``rls3_msgs/``) is found in the source
tree when running from a checkout (editable install), else under ``<share>/rls3_ros/`` of an
install: ``$AMENT_PREFIX_PATH`` prefixes (colcon, a sourced ROS 2), then ``<sys.prefix>/share``
(pip / setup.py data_files). One lookup for every module that needs such a file (pure Python).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

PACKAGE = "rls3_ros"
SOURCE_ROOT = Path(__file__).resolve().parents[2]  # the checkout holding rls3_ros/ (its repo root)


def share_dirs() -> List[Path]:
    """Existing ``share`` directories of installed ROS packages, most specific first:
    ``<prefix>/share`` for each ``$AMENT_PREFIX_PATH`` prefix, then ``<sys.prefix>/share``."""
    dirs = [Path(p) / "share" for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    dirs.append(Path(sys.prefix) / "share")
    out: List[Path] = []
    for d in dirs:
        if d.is_dir() and d not in out:
            out.append(d)
    return out


def package_roots() -> List[Path]:
    """Directories that may hold this package's data, in lookup order: the source tree, then
    ``<share>/rls3_ros`` of each of ``share_dirs()``."""
    return [SOURCE_ROOT] + [d / PACKAGE for d in share_dirs()]


def find_data(*parts: str) -> Optional[Path]:
    """The first existing ``<root>/<parts...>`` over ``package_roots()``, or None."""
    for root in package_roots():
        p = root.joinpath(*parts)
        if p.exists():
            return p
    return None


def data_path(*parts: str) -> Path:
    """``find_data(*parts)``, else the source tree's path (so a message names where it was expected)."""
    return find_data(*parts) or SOURCE_ROOT.joinpath(*parts)
