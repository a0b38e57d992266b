"""An object's 3-D centre from an aligned depth image inside its predicted box (pure numpy, no ROS).

The depth at one pixel (``grounding.depth_at``) is the object's visible SURFACE, not its centre: on the
served benchmark's rendered depth it is 0.08 m from the centre even at the true centre's own pixel.
``object_centre`` estimates the centre from the box instead:

1. *Depths of the box's inner part*: the valid depths (finite, ``grounding.MIN_DEPTH_M`` ..
   ``MAX_DEPTH_M``; a ``uint16`` image is millimetres, 0 = no depth) in the central ``inner`` fraction
   of the box's width and height (the box clipped to the image; at least one pixel). The edges of a
   box are mostly background.
2. *The object's surface*: the nearest coherent depth cluster: the depths sorted and split where two
   neighbours are more than ``cluster_gap_m`` apart; the first cluster holding at least
   ``min_cluster_share`` of the depths (a few stray near pixels are not the object). What lies behind
   it (the support, the wall, the floor) is rejected. Its ``percentile`` is the surface depth z_s.
3. *Back-projection*: the box centre pixel at z_s, with the intrinsics (with ``centroid_margin_m`` > 0:
   the centroid of the box's pixels no deeper than z_s + that margin; the fit prefers the box centre:
   0.0245 vs 0.0326 m with true boxes, although with the fixed-size boxes of ``grounded:serving`` on the
   calibration renders at 160 px the centroid gave 0.082 vs 0.088 m).
4. *Surface -> centre*: the point moved along its viewing ray by ``offset_m + offset_per_width * W``,
   W = the box's metric width (width_px * z_s / fx): about half the object's extent along the ray.

The constants are fitted on renders of ``CALIBRATION_SEED`` (scene seeds no training or test set uses)
by ``python -m rls3_ros.vlm.depth_centre_fit``, never on a held-out set. Without any valid depth in the
box, the median of the valid depths within 2 px of the located point is used as z_s
(``grounding.depth_at``); without that either, there is no centre (None).

Cost: numpy on the box crop only (a few hundred pixels for a 160 px image).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple, Optional, Sequence, Tuple

import numpy as np

from rls3_ros.vlm import grounding as G

Point3 = Tuple[float, float, float]
CALIBRATION_SEED = 31337  # render_corpus seed of the calibration renders (as rls3_ros.vlm.locator_fit)


@dataclass(frozen=True)
class CentreSettings:
    """How the depths in a box become the object's centre (defaults: fitted by
    ``python -m rls3_ros.vlm.depth_centre_fit`` on ``CALIBRATION_SEED`` renders, the true boxes)."""

    inner: float = 0.9  # central fraction of the box's width and height whose depths are used
    cluster_gap_m: float = 0.1  # sorted depths more than this apart start a new cluster
    min_cluster_share: float = 0.25  # the object's cluster: the nearest one with at least this share
    percentile: float = 25.0  # of the cluster's depths: the object's surface depth
    centroid_margin_m: float = 0.0  # back-project the centroid of the box pixels within z_s + this (0: box centre)
    offset_m: float = 0.0782  # surface -> centre along the ray: offset_m + offset_per_width * metric width
    offset_per_width: float = 0.0833

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULT_CENTRE = CentreSettings()


class CentreEstimate(NamedTuple):
    """An object's estimated centre and how it was found."""

    point: Point3  # camera optical frame [m]
    surface_depth: float  # z_s [m along the optical axis]
    pixel: Tuple[float, float]  # the back-projected pixel (u, v)
    from_box: bool  # False: no valid depth in the box, the depth at the located point was used


def depth_metres(depth: np.ndarray) -> np.ndarray:
    """(H, W) float depth [m]: float images as they are, integer images (16UC1) as millimetres."""
    d = np.asarray(depth)
    if d.ndim == 3:
        d = d[:, :, 0]
    if np.issubdtype(d.dtype, np.integer):
        return d.astype(np.float32) / 1000.0
    return d


def clip_box(box: Sequence[float], width: int, height: int) -> Optional[Tuple[int, int, int, int]]:
    """``box`` (x0, y0, x1, y1) [px, max exclusive] as integers inside the image; None if empty."""
    vals = [float(v) for v in box]
    if len(vals) != 4 or not all(math.isfinite(v) for v in vals):
        return None
    x0, y0 = max(0, int(math.floor(vals[0]))), max(0, int(math.floor(vals[1])))
    x1, y1 = min(width, int(math.ceil(vals[2]))), min(height, int(math.ceil(vals[3])))
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def inner_depths(depth: np.ndarray, box: Tuple[int, int, int, int], inner: float) -> np.ndarray:
    """Valid depths [m] (1-D) of the central ``inner`` fraction of ``box`` (at least one pixel)."""
    x0, y0, x1, y1 = box
    mx, my = (x1 - x0) * (1.0 - inner) / 2.0, (y1 - y0) * (1.0 - inner) / 2.0
    a0, b0 = int(math.floor(x0 + mx)), int(math.floor(y0 + my))
    a1, b1 = max(a0 + 1, int(math.ceil(x1 - mx))), max(b0 + 1, int(math.ceil(y1 - my)))
    crop = np.asarray(depth[b0:b1, a0:a1], np.float64).ravel()
    return crop[np.isfinite(crop) & (crop >= G.MIN_DEPTH_M) & (crop <= G.MAX_DEPTH_M)]


def nearest_cluster(depths: np.ndarray, gap_m: float, min_share: float) -> np.ndarray:
    """The nearest cluster of ``depths`` (sorted, split at gaps > ``gap_m``) holding at least
    ``min_share`` of them (the largest cluster if none does); empty in, empty out."""
    z = np.sort(np.asarray(depths, np.float64))
    if z.size == 0:
        return z
    cuts = np.flatnonzero(np.diff(z) > gap_m) + 1
    parts = np.split(z, cuts)
    need = min_share * z.size
    for p in parts:
        if p.size >= need:
            return p
    return max(parts, key=len)


def surface_depth(depth: np.ndarray, box: Sequence[float], settings: CentreSettings = DEFAULT_CENTRE
                  ) -> Optional[float]:
    """z_s [m]: the ``percentile`` of the nearest coherent depth cluster in the box's inner part;
    None without a valid depth there."""
    d = depth_metres(depth)
    if d.ndim != 2:
        return None
    b = clip_box(box, d.shape[1], d.shape[0])
    if b is None:
        return None
    c = nearest_cluster(inner_depths(d, b, settings.inner), settings.cluster_gap_m, settings.min_cluster_share)
    return float(np.percentile(c, settings.percentile)) if c.size else None


def near_centroid(depth: np.ndarray, box: Tuple[int, int, int, int], z_max: float) -> Optional[Tuple[float, float]]:
    """(u, v) [px] centroid of the pixels of ``box`` (clipped) with a valid depth <= ``z_max``; None if none."""
    x0, y0, x1, y1 = box
    crop = np.asarray(depth[y0:y1, x0:x1], np.float64)
    with np.errstate(invalid="ignore"):
        m = np.isfinite(crop) & (crop >= G.MIN_DEPTH_M) & (crop <= min(z_max, G.MAX_DEPTH_M))
    if not m.any():
        return None
    ys, xs = np.nonzero(m)
    return x0 + float(xs.mean()) + 0.5, y0 + float(ys.mean()) + 0.5


def move_along_ray(p: Sequence[float], distance: float) -> Point3:
    """``p`` (camera optical frame) moved ``distance`` [m] further along its viewing ray."""
    v = np.asarray(p, np.float64)
    n = float(np.linalg.norm(v))
    out = v if n <= 0 else v * (1.0 + distance / n)
    return float(out[0]), float(out[1]), float(out[2])


def object_centre(depth: np.ndarray, box: Sequence[float], point: Sequence[float], k: G.Intrinsics,
                  settings: CentreSettings = DEFAULT_CENTRE) -> Optional[CentreEstimate]:
    """The centre of the object in ``box`` (x0, y0, x1, y1 [px]) located at ``point`` (u, v) [px],
    from the aligned ``depth`` image (H, W: float metres, or uint16 millimetres) and the intrinsics
    ``k`` of that image: see the module docstring. None without a valid depth in the box or at the
    point, or when the intrinsics put the point beyond ``grounding.MAX_POINT_RANGE_M``."""
    d = depth_metres(depth)
    if d.ndim != 2:
        return None
    z = surface_depth(d, box, settings)
    b = clip_box(box, d.shape[1], d.shape[0])
    if z is not None and b is not None:
        u, v, from_box = (b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0, True
        if settings.centroid_margin_m > 0:
            u, v = near_centroid(d, b, z + settings.centroid_margin_m) or (u, v)
    else:
        u, v, from_box = float(point[0]), float(point[1]), False
        z = G.depth_at(d, u, v)
        if z is None:
            return None
    surface = G.point_3d(u, v, z, k)
    if surface is None:
        return None
    width_m = (b[2] - b[0]) * z / k.fx if b is not None else 0.0
    centre = move_along_ray(surface, settings.offset_m + settings.offset_per_width * width_m)
    if not all(math.isfinite(c) for c in centre) or math.sqrt(sum(c * c for c in centre)) > G.MAX_POINT_RANGE_M:
        return None
    return CentreEstimate(centre, float(z), (float(u), float(v)), from_box)
