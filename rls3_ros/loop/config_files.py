"""A run configuration from files: the shipped ``config/train.yaml``, a user's ``--config`` file, the
``quick:`` section and ``--set section.key=value`` overrides, in that order, over the schema's
defaults (``rls3_ros.loop.config``). Used by ``rls3 train`` and the benchmarks (pure Python, no ROS).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Dict, List

import yaml


def _config_file() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    for cand in (os.path.join(here, "..", "..", "config", "train.yaml"),):
        if os.path.exists(cand):
            return os.path.abspath(cand)
    try:  # installed with colcon / pip data_files
        from ament_index_python.packages import get_package_share_directory  # type: ignore

        p = os.path.join(get_package_share_directory("rls3_ros"), "config", "train.yaml")
        if os.path.exists(p):
            return p
    except Exception:
        pass
    p = os.path.join(sys.prefix, "share", "rls3_ros", "config", "train.yaml")
    return p if os.path.exists(p) else ""


def _parse_value(v: str) -> Any:
    return yaml.safe_load(v)


def apply_sets(cfg: Dict[str, Any], sets: List[str]) -> Dict[str, Any]:
    for item in sets:
        if "=" not in item:
            raise ValueError(f"--set expects section.key=value, got {item!r}")
        key, val = item.split("=", 1)
        parts = key.strip().split(".")
        d = cfg
        for p in parts[:-1]:
            d = d.setdefault(p, {})
        d[parts[-1]] = _parse_value(val)
    return cfg


def load_train_config(config: str = "", quick: bool = False, sets: List[str] = ()) -> Dict[str, Any]:
    from rls3_ros.loop.config import DEFAULT_CONFIG, merge_config

    cfg = merge_config(DEFAULT_CONFIG, {})
    quick_section: Dict[str, Any] = {}
    for path in [p for p in (_config_file(), config) if p]:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
        quick_section = merge_config(quick_section, data.pop("quick", {}) or {})
        cfg = merge_config(cfg, data)
    if quick:
        cfg = merge_config(cfg, quick_section)
    return apply_sets(cfg, list(sets))
