"""A run configuration from files: the shipped ``config/train.yaml``, a user's ``--config`` file, the
``quick:`` section and ``--set section.key=value`` overrides, in that order, over the schema's
defaults (``rls3_ros.loop.config``). Used by ``rls3 train`` and the benchmarks (pure Python, no ROS).
"""

from __future__ import annotations

from typing import Any, Dict, List

import yaml

from rls3_ros.core.share_dir import find_data


def _config_file() -> str:
    """The shipped config/train.yaml (source tree, else installed share dir), or "" when there is none."""
    p = find_data("config", "train.yaml")
    return str(p) if p else ""


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
