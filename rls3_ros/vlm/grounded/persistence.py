"""The grounded model on disk: ``config.json`` + ``model.safetensors``, saved atomically, loaded strictly,
and the fingerprint of its weights that every adapter trained on it records."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Dict, Optional

from rls3_ros.vlm.grounded.config import CONFIG, FAMILY, WEIGHTS, GroundedConfig
from rls3_ros.vlm.grounded.model import GroundedRelationModel

LOCATOR = "locator.json"  # the model's own locator calibration (rls3_ros.vlm.locator_fit), optional


def base_fingerprint(model: GroundedRelationModel) -> str:
    """Short hash of the base weights: an adapter records the base it was trained on."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def save_model(model: GroundedRelationModel, directory: Path, extra: Optional[Dict] = None) -> Path:
    """config.json + model.safetensors (+ pretrain_metrics.json), written atomically: a hidden temp
    dir, every file fsynced, renamed into place (``rls3_ros.core.atomic_io.atomic_dir``); files of an
    existing directory that are not ours (README.md) are copied into the new one first; a ``locator.json``
    fitted for the old weights is not."""
    from safetensors.torch import save_file

    from rls3_ros.core.atomic_io import atomic_dir

    directory = Path(directory).absolute()
    with atomic_dir(str(directory)) as tmp_dir:
        tmp = Path(tmp_dir)
        (tmp / CONFIG).write_text(model.config.to_json())
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(tmp / WEIGHTS))
        if extra is not None:
            (tmp / "pretrain_metrics.json").write_text(json.dumps(extra, indent=1))
        if directory.is_dir():  # keep files we do not own (README.md): the old directory stays whole until the swap
            for f in directory.iterdir():
                # a locator fit belongs to the old weights: dropped with them
                if f.name not in (CONFIG, WEIGHTS, "pretrain_metrics.json", LOCATOR) and not (tmp / f.name).exists():
                    if f.is_dir():
                        shutil.copytree(f, tmp / f.name, symlinks=True)
                    else:
                        shutil.copy2(f, tmp / f.name, follow_symlinks=False)
    return directory


def load_grounded_dir(directory: Path) -> GroundedRelationModel:
    """The grounded model saved in ``directory`` (``save_model``), in eval mode; FileNotFoundError
    without one, ValueError if it holds another family's model."""
    from safetensors.torch import load_file

    directory = Path(directory)
    cfg_path = directory / CONFIG
    if not cfg_path.is_file() or not (directory / WEIGHTS).is_file():
        raise FileNotFoundError(f"no grounded model in {directory} (need {CONFIG} and {WEIGHTS}); "
                                "build one with: python -m rls3_ros.vlm.grounded_pretrain")
    d = json.loads(cfg_path.read_text())
    if d.get("family", FAMILY) != FAMILY:
        raise ValueError(f"{directory} holds a {d.get('family')!r} model, not {FAMILY!r}")
    model = GroundedRelationModel(GroundedConfig.from_dict(d))
    model.load_state_dict(load_file(str(directory / WEIGHTS)), strict=True)
    return model.eval()


def load_locator_settings(directory: Path):
    """The ``LocatorSettings`` fitted for the model in ``directory`` (``locator.json``), or None without
    one; ValueError naming the file when it holds anything but finite settings in range."""
    import math

    from rls3_ros.vlm.grounding import LocatorSettings

    path = Path(directory) / LOCATOR
    if not path.is_file():
        return None
    try:
        d = json.loads(path.read_text())["settings"]
        s = LocatorSettings(window=int(d["window"]), box_width=float(d["box_width"]), box_height=float(d["box_height"]),
                            conf_slope=float(d["conf_slope"]), conf_bias=float(d["conf_bias"]))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a locator calibration ({e})") from None
    if not (0 <= s.window <= 4 and 0 < s.box_width <= 1 and 0 < s.box_height <= 1
            and math.isfinite(s.conf_slope) and math.isfinite(s.conf_bias)):
        raise ValueError(f"{path}: locator settings out of range: {s}")
    return s


def load_point_source(directory: Path) -> str:
    """Where the model in ``directory`` takes a located point from (``locator.json``'s "point": "peak" of
    the attention or centre of the "box" head's box); "peak" without one."""
    path = Path(directory) / LOCATOR
    if not path.is_file():
        return "peak"
    point = json.loads(path.read_text()).get("point", "peak")
    if point not in ("peak", "box"):
        raise ValueError(f"{path}: point must be 'peak' or 'box', got {point!r}")
    return point


def save_locator_settings(settings, directory: Path, fitted_on: Dict, point: str = "peak") -> Path:
    """Write ``locator.json`` (the settings, the point source and what they were fitted on) atomically."""
    from rls3_ros.core.atomic_io import atomic_write_json

    path = Path(directory) / LOCATOR
    atomic_write_json(str(path), {"settings": settings.to_dict(), "point": point, "fitted_on": fitted_on}, indent=1)
    return path
