"""The angle-based caption oracle of the RLS3 paper (section 2), pure Python.

Geometry (all decisions are made in the *camera-aligned ground frame*):

- The world is z up. The camera's yaw fixes two horizontal unit vectors: ``right`` (the
  image-right direction: the optical x axis projected on the ground plane; if the camera is
  rolled so that this vanishes, the optical z axis is used instead) and ``toward`` =
  ``right x z`` (horizontal direction pointing back toward the camera, i.e. minus the
  camera's horizontal viewing direction). Roll and pitch are ignored, so a pair's terms
  depend only on the camera yaw and the two object centres
  (``ObjectState.position``, centre of the 3D box).
- For subject A and reference B, with d = B - A: ``u = d . toward``, ``v = d . right``,
  ``rho = hypot(u, v)`` and ``dz = d . z``.
  ``horizontal_angle = atan2(v, u)`` is the bearing of B seen from A (0 = toward the
  camera, +pi/2 = image right) and ``vertical_angle = atan2(dz, rho)`` its elevation.
- Horizontal: 8 sectors centred on A (``terms.HORIZONTAL_SECTORS``). The four "pure"
  sectors (behind, left, in front, right) have half-width ``h`` =
  ``horizontal_half_width_deg`` (default 22.5 deg -> 8 equal 45 deg sectors, the paper's
  figure); the four diagonal sectors fill the rest. "Behind faces the camera": if B lies
  toward the camera from A, A is *behind* B; if B lies to image-right of A, A is *to the
  left of* B. Implemented without angle wrap-around as: A behind iff ``u > sin(h) rho``,
  in front iff ``-u > sin(h) rho``, left iff ``v > sin(h) rho``, right iff
  ``-v > sin(h) rho``. Boundaries therefore sit at bearings +-h, +-(90-h), +-(90+h),
  +-(180-h); a bearing exactly on a boundary takes the pure sector's single term. The
  comparisons are exactly antisymmetric in floating point (swapping A and B negates d).
- Vertical: 3 bands. A is *below* B iff the elevation of B exceeds
  ``vertical_threshold_deg`` (default 20 deg, read off the paper's side panel), *above*
  B iff it is below minus that, otherwise no vertical term ("level").
- Term count (the paper does not say how 1-term vertical captions arise; our choice):
  when a vertical term is present and B lies inside the cone of half-angle
  ``90 - vertical_only_elevation_deg`` around the vertical through A (default
  ``vertical_only_elevation_deg`` = 67.5 deg, i.e. the horizontal offset is less than
  tan(22.5 deg) = 0.41 of the vertical offset: the same 22.5 deg half-width as the pure
  horizontal sectors), the horizontal term is dropped: the objects are (nearly) stacked,
  and left/right/front/behind of a stacked pair is neither salient nor stable. A
  horizontal offset below ``min_horizontal_distance`` also drops it. Horizontal-only
  captions are simply those in the level band. So a relation has 1 to 3 terms:
  1 = pure sector, level (or vertical-only); 2 = diagonal sector, level, or pure sector +
  vertical; 3 = diagonal sector + vertical.
- Extension "on"/"under" (``use_support_terms``, default on): if A rests on B
  (``A.supported_by == B.id``) the vertical term is "on" (replacing "above"); if B rests
  on A it is "under". With ``support_vertical_only`` (default on) such a relation has
  only that term ("The cup is on the plate."), since a horizontal term about an object
  one rests on reads unnaturally.
- Option ``vertical_requires_separation`` (default off = the paper's centre-only rule):
  "above"/"below" also require the two 3D boxes to be vertically separated (the lower
  box's top at most ``vertical_overlap_tolerance`` above the upper box's bottom). With the
  centre-only rule a tall object next to a flat one on the same surface is "above" it when
  they are close: in 1,000 random MuJoCo scenes 10.6 % of the above/below relations were
  such same-surface pairs (docs/caption_stats.md).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from rls3_ros.captions import terms as T
from rls3_ros.core.scene import CameraModel, ObjectState, SceneState, SpatialRelation


class CaptionError(ValueError):
    """A pair cannot be captioned (bad input or degenerate geometry)."""


@dataclass
class OracleConfig:
    """Caption-oracle parameters (defaults = the paper's figure geometry where it has one).

    Geometry:
        horizontal_half_width_deg (22.5): half-width of the pure horizontal sectors
            (behind / left / in front / right); 22.5 gives 8 equal 45 deg sectors.
        horizontal_frame ("camera"): "camera" = sectors aligned with the camera yaw (one
            frame for the whole image); "pair_ray" = "behind" faces the camera as seen
            from the pair's midpoint (follows perspective for objects off the image centre;
            still exactly antisymmetric, the midpoint being shared).
        vertical_threshold_deg (20.0): elevation of B from A beyond which A is below
            (or, negated, above) B.
        vertical_only_elevation_deg (67.5): with a vertical term, elevations at or beyond
            this drop the horizontal term (nearly stacked pair); 90 disables.
        min_horizontal_distance (0.01 m): horizontal offsets below this give no
            horizontal term (bearing undefined).
        min_distance (0.02 m): centre-to-centre distances below this cannot be captioned.
        vertical_requires_separation (False): above/below also need vertically separated
            3D boxes (see module docstring); False = the paper's centre-only rule.
        vertical_overlap_tolerance (0.02 m): boxes overlapping vertically by at most this
            still count as separated.
        use_support_terms (True): "on" / "under" from ObjectState.supported_by.
        support_vertical_only (True): "on"/"under" relations carry no horizontal term.
    Pair selection (``caption_scene``, see ``rls3_ros.captions.pairs``):
        require_visible (True): only objects with ``visible`` set.
        require_active (True): each pair includes at least one active object, when the
            scene flags any eligible object active (else all eligible pairs).
        boundary_margin_deg (0.0): skip pairs whose bearing/elevation lies within this
            many degrees of a decision boundary (0 = keep all, as the paper).
        max_pairs (0): captions per image, 0 = all eligible pairs.
        negatives (True): attach hard-negative captions to each relation.
    """

    horizontal_half_width_deg: float = 22.5
    horizontal_frame: str = "camera"
    vertical_threshold_deg: float = 20.0
    vertical_only_elevation_deg: float = 67.5
    min_horizontal_distance: float = 0.01
    min_distance: float = 0.02
    vertical_requires_separation: bool = False
    vertical_overlap_tolerance: float = 0.02
    use_support_terms: bool = True
    support_vertical_only: bool = True
    require_visible: bool = True
    require_active: bool = True
    boundary_margin_deg: float = 0.0
    max_pairs: int = 0
    negatives: bool = True

    def validate(self) -> "OracleConfig":
        """Raise ValueError with a clear message on an invalid parameter; return self."""
        if self.horizontal_frame not in ("camera", "pair_ray"):
            raise ValueError(f"horizontal_frame must be 'camera' or 'pair_ray', got {self.horizontal_frame!r}")
        if not 0.0 < self.horizontal_half_width_deg < 45.0:
            raise ValueError(f"horizontal_half_width_deg must be in (0, 45), got {self.horizontal_half_width_deg}")
        if not 0.0 <= self.vertical_threshold_deg < 90.0:
            raise ValueError(f"vertical_threshold_deg must be in [0, 90), got {self.vertical_threshold_deg}")
        if not self.vertical_threshold_deg < self.vertical_only_elevation_deg <= 90.0:
            raise ValueError(
                "vertical_only_elevation_deg must be in (vertical_threshold_deg, 90], "
                f"got {self.vertical_only_elevation_deg}"
            )
        if self.min_horizontal_distance < 0 or self.min_distance < 0 or self.vertical_overlap_tolerance < 0:
            raise ValueError("min_horizontal_distance, min_distance and vertical_overlap_tolerance must be >= 0")
        if not 0.0 <= self.boundary_margin_deg < 22.5:
            raise ValueError(f"boundary_margin_deg must be in [0, 22.5), got {self.boundary_margin_deg}")
        if self.max_pairs < 0:
            raise ValueError(f"max_pairs must be >= 0, got {self.max_pairs}")
        return self


def ground_axes(camera: CameraModel) -> Tuple[np.ndarray, np.ndarray]:
    """(toward, right): horizontal unit vectors of the camera-aligned ground frame."""
    rot = camera.rotation()
    right = np.array([rot[0, 0], rot[1, 0], 0.0])
    n = float(np.linalg.norm(right))
    if n < 1e-6:  # rolled +-90 deg: use the viewing direction
        fwd = np.array([rot[0, 2], rot[1, 2], 0.0])
        nf = float(np.linalg.norm(fwd))
        if nf < 1e-6:
            raise CaptionError("camera orientation has no horizontal direction")
        fwd /= nf
        right = np.cross(fwd, [0.0, 0.0, 1.0])
        n = float(np.linalg.norm(right))
    right = right / n
    toward = np.cross(right, [0.0, 0.0, 1.0])
    return toward, right


@dataclass
class PairGeometry:
    """B seen from A in the camera-aligned ground frame (see module docstring)."""

    u: float  # toward the camera [m]
    v: float  # image right [m]
    dz: float  # up [m]

    @property
    def rho(self) -> float:
        return math.hypot(self.u, self.v)

    @property
    def distance(self) -> float:
        return math.sqrt(self.u * self.u + self.v * self.v + self.dz * self.dz)

    @property
    def bearing(self) -> float:
        return math.atan2(self.v, self.u)

    @property
    def elevation(self) -> float:
        return math.atan2(self.dz, self.rho)


def _finite(o: ObjectState) -> None:
    if len(o.position) != 3 or not all(math.isfinite(float(c)) for c in o.position):
        raise CaptionError(f"object {o.id!r} has a non-finite position {tuple(o.position)!r}")


def pair_axes(camera: CameraModel, a: ObjectState, b: ObjectState) -> Tuple[np.ndarray, np.ndarray]:
    """(toward, right) with "toward" = horizontal direction from the pair's midpoint to the
    camera (``horizontal_frame="pair_ray"``); falls back to ``ground_axes`` when the camera
    is straight above the midpoint."""
    mid = (np.asarray(a.position, dtype=float) + np.asarray(b.position, dtype=float)) / 2.0
    t = np.asarray(camera.position, dtype=float) - mid
    t[2] = 0.0
    n = float(np.linalg.norm(t))
    if n < 1e-6:
        return ground_axes(camera)
    toward = t / n
    right = np.cross([0.0, 0.0, 1.0], toward)
    return toward, right


def pair_geometry(scene: SceneState, a: ObjectState, b: ObjectState, frame: str = "camera") -> PairGeometry:
    """Geometry of B seen from A; ``frame``: "camera" (camera yaw, default) or "pair_ray"."""
    _finite(a)
    _finite(b)
    if frame == "camera":
        toward, right = ground_axes(scene.camera)
    elif frame == "pair_ray":
        toward, right = pair_axes(scene.camera, a, b)
    else:
        raise CaptionError(f"unknown horizontal_frame {frame!r} (camera | pair_ray)")
    d = np.asarray(b.position, dtype=float) - np.asarray(a.position, dtype=float)
    return PairGeometry(u=float(d @ toward), v=float(d @ right), dz=float(d[2]))


def _deg_dist(a: float, b: float) -> float:
    d = abs(a - b) % 360.0
    return min(d, 360.0 - d)


class CaptionOracle:
    """Ground-truth spatial relations and captions of object pairs in a scene."""

    def __init__(self, config: Optional[OracleConfig] = None) -> None:
        self.config = (config or OracleConfig()).validate()
        c = self.config
        self._s_h = math.sin(math.radians(c.horizontal_half_width_deg))
        self._t_v = math.tan(math.radians(c.vertical_threshold_deg))
        self._t_vo = (
            math.inf if c.vertical_only_elevation_deg >= 90.0 else math.tan(math.radians(c.vertical_only_elevation_deg))
        )

    # -- single pair ------------------------------------------------------------------
    def terms_from_geometry(
        self, g: PairGeometry, a_on_b: bool = False, b_on_a: bool = False, separated: bool = True
    ) -> List[str]:
        """Terms of A relative to B from the geometry of B seen from A (+ support flags;
        ``separated``: the boxes are vertically separated, used only with
        ``vertical_requires_separation``)."""
        c = self.config
        rho = g.rho
        if g.distance < c.min_distance:
            raise CaptionError(f"objects {g.distance:.4f} m apart (< min_distance {c.min_distance} m)")
        vertical: List[str] = []
        if c.use_support_terms and (a_on_b or b_on_a):
            vertical = [T.ON if a_on_b else T.UNDER]
        elif c.vertical_requires_separation and not separated:
            vertical = []
        elif g.dz > self._t_v * rho:
            vertical = [T.BELOW]
        elif -g.dz > self._t_v * rho:
            vertical = [T.ABOVE]
        horizontal: List[str] = []
        drop = rho < c.min_horizontal_distance
        if vertical:
            if vertical[0] in (T.ON, T.UNDER):
                drop = drop or c.support_vertical_only
            else:
                drop = drop or abs(g.dz) >= self._t_vo * rho
        if not drop:
            s = self._s_h * rho
            if g.u > s:
                horizontal.append(T.BEHIND)
            elif -g.u > s:
                horizontal.append(T.IN_FRONT)
            if g.v > s:
                horizontal.append(T.LEFT)
            elif -g.v > s:
                horizontal.append(T.RIGHT)
        out = vertical + horizontal
        if not out:
            raise CaptionError("degenerate pair: no spatial term applies")
        return T.canonical_terms(out)

    def geometry(self, scene: SceneState, a: ObjectState, b: ObjectState) -> PairGeometry:
        """B seen from A in the configured horizontal frame."""
        return pair_geometry(scene, a, b, self.config.horizontal_frame)

    def vertically_separated(self, a: ObjectState, b: ObjectState) -> bool:
        """True if one 3D box lies above the other (overlap <= vertical_overlap_tolerance)."""
        tol = self.config.vertical_overlap_tolerance
        a_lo, a_hi = a.position[2] - abs(a.size[2]) / 2, a.position[2] + abs(a.size[2]) / 2
        b_lo, b_hi = b.position[2] - abs(b.size[2]) / 2, b.position[2] + abs(b.size[2]) / 2
        return a_lo >= b_hi - tol or b_lo >= a_hi - tol

    def boundary_margin_deg(self, g: PairGeometry, terms: Sequence[str], separated: bool = True) -> float:
        """Angular distance [deg] of the pair from the nearest decision boundary it depends on
        (``separated`` as in ``terms_from_geometry``)."""
        c = self.config
        margins = [math.inf]
        has_h = any(t in T.HORIZONTAL_TERMS for t in terms)
        support = any(t in (T.ON, T.UNDER) for t in terms)
        if not support and not (c.vertical_requires_separation and not separated):
            el = abs(math.degrees(g.elevation))
            margins.append(abs(el - c.vertical_threshold_deg))
            if c.vertical_only_elevation_deg < 90.0:
                margins.append(abs(el - c.vertical_only_elevation_deg))
        if has_h:
            b = math.degrees(g.bearing)
            h = c.horizontal_half_width_deg
            for edge in (h, 90 - h, 90 + h, 180 - h):
                margins.append(_deg_dist(b, edge))
                margins.append(_deg_dist(b, -edge))
        return float(min(margins))

    def relation(self, scene: SceneState, subject_id: str, reference_id: str) -> SpatialRelation:
        """Ground-truth relation (terms, angles, caption) of ``subject_id`` relative to ``reference_id``.

        Raises KeyError for an unknown id and CaptionError (ValueError) for a bad or
        degenerate pair. ``negatives`` are left empty (see ``negatives.hard_negatives``).
        """
        if subject_id == reference_id:
            raise CaptionError(f"subject and reference are the same object {subject_id!r}")
        a = scene.object(subject_id)
        b = scene.object(reference_id)
        g = self.geometry(scene, a, b)
        ts = self.terms_from_geometry(
            g, a_on_b=a.supported_by == b.id, b_on_a=b.supported_by == a.id, separated=self.vertically_separated(a, b)
        )
        a_desc = a.description or a.category or a.id
        b_desc = b.description or b.category or b.id
        return SpatialRelation(
            subject_id=a.id,
            reference_id=b.id,
            subject_description=a_desc,
            reference_description=b_desc,
            terms=ts,
            horizontal_angle=g.bearing,
            vertical_angle=g.elevation,
            distance=g.distance,
            caption=T.make_caption(a_desc, ts, b_desc),
        )

    # -- whole scene ------------------------------------------------------------------
    def select_pairs(self, scene: SceneState, max_pairs: int = 0,
                     rng: Union[None, int, random.Random, np.random.Generator] = None) -> List[SpatialRelation]:
        """Relations (without negatives) for the selected pairs of ``scene`` (rules in
        ``rls3_ros.captions.pairs``: eligible objects, one relation per unordered pair)."""
        from rls3_ros.captions.pairs import PairRng, candidate_pairs

        cfg = self.config
        r = PairRng(rng) if rng is not None else None
        rels: List[SpatialRelation] = []
        for a_id, b_id in candidate_pairs(scene, cfg.require_visible, cfg.require_active):
            if r is not None and r.coin():
                a_id, b_id = b_id, a_id
            try:
                rel = self.relation(scene, a_id, b_id)
            except CaptionError:
                continue
            if cfg.boundary_margin_deg > 0:
                a, b = scene.object(a_id), scene.object(b_id)
                g = self.geometry(scene, a, b)
                if self.boundary_margin_deg(g, rel.terms, self.vertically_separated(a, b)) < cfg.boundary_margin_deg:
                    continue
            rels.append(rel)
        if r is not None:
            r.shuffle(rels)
        if max_pairs > 0:
            rels = rels[:max_pairs]
        return rels

    def caption_scene(
        self,
        scene: SceneState,
        max_pairs: int = 0,
        rng: Union[None, int, random.Random, np.random.Generator] = None,
    ) -> List[SpatialRelation]:
        """Caption the selected pairs of one image (see :meth:`select_pairs`).

        ``max_pairs`` > 0 overrides ``config.max_pairs``. ``rng`` (seed, random.Random or
        numpy Generator) randomises which object of a pair is the subject and which pairs
        survive the cap; None keeps scene order (deterministic).
        """
        from rls3_ros.captions.negatives import hard_negatives

        rels = self.select_pairs(scene, max_pairs=max_pairs or self.config.max_pairs, rng=rng)
        if self.config.negatives:
            for r in rels:
                r.negatives = hard_negatives(r)
        return rels
