"""Property tests of the caption oracle geometry, captions, parser and negatives."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from rls3_ros.captions import terms as T
from rls3_ros.captions.negatives import hard_negatives, negative_triples
from rls3_ros.captions.oracle import CaptionError, CaptionOracle, OracleConfig, ground_axes, pair_geometry
from rls3_ros.captions.pairs import eligible_objects
from rls3_ros.captions.parse import extract_terms, parse_caption
from rls3_ros.core.scene import CameraModel, ObjectState, SceneState

SETTINGS = settings(max_examples=300, deadline=None)

coord = st.floats(-3.0, 3.0, allow_nan=False, allow_infinity=False)
height = st.floats(0.0, 2.0, allow_nan=False, allow_infinity=False)
point = st.tuples(coord, coord, height)


def camera_at(yaw: float, pitch_deg: float, dist: float, target=(0.0, 0.0, 0.5)) -> CameraModel:
    """Camera ``dist`` from target, horizontal viewing direction at angle ``yaw``."""
    p = math.radians(pitch_deg)
    t = np.asarray(target, dtype=float)
    view = np.array([math.cos(yaw) * math.cos(p), math.sin(yaw) * math.cos(p), -math.sin(p)])
    return CameraModel.look_at(tuple(t - dist * view), tuple(t), 96, 96, 60.0)


cameras = st.builds(
    camera_at,
    st.floats(-math.pi, math.pi),
    st.floats(-30.0, 80.0),
    st.floats(1.0, 6.0),
)


def scene_of(cam, pa, pb, a_on_b=False, b_on_a=False, desc=("red mug", "lamp")) -> SceneState:
    return SceneState(
        "s",
        "kitchen",
        0,
        cam,
        [
            ObjectState("a", "mug", desc[0], tuple(pa), active=True, supported_by="b" if a_on_b else ""),
            ObjectState("b", "lamp", desc[1], tuple(pb), active=True, supported_by="a" if b_on_a else ""),
        ],
    )


support = st.sampled_from([(False, False), (True, False), (False, True)])


frames = st.sampled_from(["camera", "pair_ray"])


@SETTINGS
@given(cameras, point, point, support, frames)
def test_antisymmetry(cam, pa, pb, sup, frame):
    """A rel B => B has the inverse terms rel A (exactly, even on boundaries)."""
    o = CaptionOracle(OracleConfig(horizontal_frame=frame))
    s = scene_of(cam, pa, pb, *sup)
    try:
        ab = o.relation(s, "a", "b")
    except CaptionError:
        with pytest.raises(CaptionError):
            o.relation(s, "b", "a")
        return
    ba = o.relation(s, "b", "a")
    assert ba.terms == T.inverse_terms(ab.terms)
    assert 1 <= len(ab.terms) <= 3
    assert parse_caption(ab.caption) == ("red mug", ab.terms, "lamp")
    assert parse_caption(ba.caption) == ("lamp", ba.terms, "red mug")
    assert math.isclose(ab.distance, ba.distance)


@SETTINGS
@given(st.floats(-math.pi, math.pi), st.floats(-20.0, 70.0), st.floats(1.5, 6.0), point, point, frames)
def test_camera_rotated_180_about_pair_flips_horizontal_terms(yaw, pitch, dist, pa, pb, frame):
    """Rotating the camera 180 deg about the vertical through the pair swaps left/right and
    front/behind and keeps the vertical term."""
    o = CaptionOracle(OracleConfig(horizontal_frame=frame))
    mid = tuple((np.asarray(pa) + np.asarray(pb)) / 2.0)
    s1 = scene_of(camera_at(yaw, pitch, dist, mid), pa, pb)
    s2 = scene_of(camera_at(yaw + math.pi, pitch, dist, mid), pa, pb)
    try:
        r1 = o.relation(s1, "a", "b")
    except CaptionError:
        return
    g = o.geometry(s1, s1.object("a"), s1.object("b"))
    assume(o.boundary_margin_deg(g, r1.terms) > 1e-6)
    assume(g.rho > 2 * o.config.min_horizontal_distance)
    r2 = o.relation(s2, "a", "b")
    flip_h = {T.LEFT: T.RIGHT, T.RIGHT: T.LEFT, T.IN_FRONT: T.BEHIND, T.BEHIND: T.IN_FRONT}
    assert r2.terms == T.canonical_terms(flip_h.get(t, t) for t in r1.terms)
    assert math.isclose(abs(r2.horizontal_angle - r1.horizontal_angle), math.pi, abs_tol=1e-6)


def test_ground_axes_follow_camera_yaw():
    cam = CameraModel.look_at((-2.0, 0.0, 1.5), (0.0, 0.0, 0.5), 64, 64, 60.0)  # looks along +x
    toward, right = ground_axes(cam)
    np.testing.assert_allclose(toward, [-1, 0, 0], atol=1e-9)
    np.testing.assert_allclose(right, [0, -1, 0], atol=1e-9)  # +x view, z up -> image right is -y
    # a straight-down camera still has a yaw (from its image-right axis)
    top = CameraModel(position=(0, 0, 3), orientation=(1.0, 0.0, 0.0, 0.0), width=64, height=64, fx=50, fy=50, cx=32, cy=32)
    toward, right = ground_axes(top)
    np.testing.assert_allclose(right, [1, 0, 0], atol=1e-9)


def test_paper_example_geometry():
    """Paper: B toward the camera, to image-right of A and below A ->
    "The small pot is above, behind and to the left of the yellow bowl"."""
    cam = CameraModel.look_at((-3.0, 0.0, 1.5), (0.0, 0.0, 0.5), 64, 64, 60.0)
    s = scene_of(cam, (0.0, 0.0, 1.0), (-0.3, -0.3, 0.7), desc=("small pot", "yellow bowl"))
    r = CaptionOracle().relation(s, "a", "b")
    assert r.terms == [T.ABOVE, T.BEHIND, T.LEFT]
    assert r.caption == "The small pot is above, behind and to the left of the yellow bowl."


# ---- sector boundaries at the configured angles --------------------------------------
FIXED_CAM = CameraModel.look_at((-4.0, 0.0, 0.5), (0.0, 0.0, 0.5), 64, 64, 60.0)  # toward=-x, right=-y


def at_bearing(theta_deg: float, elev_deg: float = 0.0, rho: float = 1.0):
    th, el = math.radians(theta_deg), math.radians(elev_deg)
    toward, right = np.array([-1.0, 0, 0]), np.array([0, -1.0, 0])
    d = rho * (math.cos(th) * toward + math.sin(th) * right) + np.array([0, 0, rho * math.tan(el)])
    return tuple(np.array([0.0, 0.0, 0.5]) + d)


def terms_at(o, theta, elev=0.0):
    return o.relation(scene_of(FIXED_CAM, (0.0, 0.0, 0.5), at_bearing(theta, elev)), "a", "b").terms


def test_default_sectors_are_the_papers_eight():
    o = CaptionOracle()
    for k, sector in enumerate(T.HORIZONTAL_SECTORS):
        assert terms_at(o, 180.0 - 45.0 * k) == list(sector), k
    for k in range(8):  # the boundaries sit at +-22.5, 67.5, 112.5, 157.5
        b = 22.5 + 45.0 * k
        assert terms_at(o, b - 0.01) != terms_at(o, b + 0.01)
        assert terms_at(o, b + 22.5 - 0.5) == terms_at(o, b + 0.5)


EPS = 1e-3


@SETTINGS
@given(st.floats(2.0, 43.0), st.floats(2.0, 60.0), st.sampled_from([1.0, -1.0]))
def test_sector_boundaries_at_configured_angles(h, v, side):
    o = CaptionOracle(OracleConfig(horizontal_half_width_deg=h, vertical_threshold_deg=v, vertical_only_elevation_deg=89.0))
    lat = T.LEFT if side > 0 else T.RIGHT
    cases = [  # (edge, terms just inside (smaller |bearing|), terms just outside)
        (h, [T.BEHIND], [T.BEHIND, lat]),
        (90.0 - h, [T.BEHIND, lat], [lat]),
        (90.0 + h, [lat], [T.IN_FRONT, lat]),
        (180.0 - h, [T.IN_FRONT, lat], [T.IN_FRONT]),
    ]
    for edge, inside, outside in cases:
        assert terms_at(o, side * (edge - EPS)) == inside, (edge, "inside")
        assert terms_at(o, side * (edge + EPS)) == outside, (edge, "outside")
    # vertical band: B above A beyond v => A below B; within the band no vertical term
    assert terms_at(o, 0.0, v - EPS) == [T.BEHIND]
    assert terms_at(o, 0.0, v + EPS) == [T.BELOW, T.BEHIND]
    assert terms_at(o, 0.0, -(v - EPS)) == [T.BEHIND]
    assert terms_at(o, 0.0, -(v + EPS)) == [T.ABOVE, T.BEHIND]


@SETTINGS
@given(st.floats(25.0, 85.0))
def test_vertical_only_boundary(vo):
    o = CaptionOracle(OracleConfig(vertical_only_elevation_deg=vo))
    assert terms_at(o, 90.0, vo - EPS) == [T.BELOW, T.LEFT]
    assert terms_at(o, 90.0, vo + EPS) == [T.BELOW]
    assert terms_at(o, -90.0, -(vo + EPS)) == [T.ABOVE]


def test_support_terms():
    o = CaptionOracle()
    s = scene_of(FIXED_CAM, (0.0, 0.3, 0.9), (0.0, 0.0, 0.5), a_on_b=True, desc=("green cup", "plate"))
    assert o.relation(s, "a", "b").caption == "The green cup is on the plate."
    assert o.relation(s, "b", "a").caption == "The plate is under the green cup."
    o2 = CaptionOracle(OracleConfig(use_support_terms=False))
    assert o2.relation(s, "a", "b").terms == [T.ABOVE, T.LEFT]  # B is to image-right of A
    o3 = CaptionOracle(OracleConfig(support_vertical_only=False))
    assert o3.relation(s, "a", "b").terms == [T.ON, T.LEFT]


def test_bad_input_raises():
    o = CaptionOracle()
    s = scene_of(FIXED_CAM, (0.0, 0.0, 0.5), (0.0, 0.0, 0.5))
    with pytest.raises(CaptionError):
        o.relation(s, "a", "b")  # same place
    with pytest.raises(CaptionError):
        o.relation(s, "a", "a")
    with pytest.raises(KeyError):
        o.relation(s, "a", "nope")
    s = scene_of(FIXED_CAM, (0.0, float("nan"), 0.5), (0.0, 0.0, 0.5))
    with pytest.raises(CaptionError):
        o.relation(s, "a", "b")
    with pytest.raises(ValueError):
        OracleConfig(horizontal_half_width_deg=50).validate()


# ---- captions and parser --------------------------------------------------------------
term_sets = st.tuples(
    st.sampled_from([None, T.ABOVE, T.BELOW, T.ON, T.UNDER]),
    st.sampled_from([None, T.IN_FRONT, T.BEHIND]),
    st.sampled_from([None, T.LEFT, T.RIGHT]),
).map(lambda ts: [t for t in ts if t]).filter(bool)
WORDS = ["red", "green", "small", "wooden", "mug", "lamp", "bowl", "vase", "blender", "bird", "sculpture", "wine", "bottle", "cup", "plate"]
descriptions = st.lists(st.sampled_from(WORDS), min_size=1, max_size=3).map(" ".join)


@SETTINGS
@given(descriptions, term_sets, descriptions)
def test_every_caption_parses_back(a, ts, b):
    cap = T.make_caption(a, ts, b)
    assert parse_caption(cap) == (a, T.canonical_terms(ts), b)
    assert extract_terms(cap) == T.canonical_terms(ts)
    # lenient forms a generative model may produce
    assert parse_caption(cap.lower().rstrip(".").replace("the ", "", 1)) == (a, T.canonical_terms(ts), b)
    for neg in hard_negatives_for(a, ts, b):
        parse_caption(neg)


def hard_negatives_for(a, ts, b):
    return [T.make_caption(s, t, r) for s, t, r in negative_triples(a, ts, b)]


def test_surface_forms():
    assert T.make_caption("red mug", [T.ABOVE, T.LEFT], "lamp") == "The red mug is above and to the left of the lamp."
    assert T.make_caption("vase", [T.RIGHT, T.BEHIND], "green cup") == "The vase is behind and to the right of the green cup."
    assert T.make_caption("blender", [T.BELOW, T.IN_FRONT], "plate") == "The blender is below and in front of the plate."
    assert T.make_caption("bowl", [T.IN_FRONT, T.RIGHT], "cup") == "The bowl is in front and to the right of the cup."
    assert parse_caption("the bowl is in front of and to the right of cup") == ("bowl", [T.IN_FRONT, T.RIGHT], "cup")
    assert parse_caption("The mug is on the left side of the lamp") == ("mug", [T.LEFT], "lamp")
    with pytest.raises(ValueError):
        parse_caption("The mug is red.")
    with pytest.raises(ValueError):
        parse_caption("The mug is left and right of the lamp.")


# ---- negatives -------------------------------------------------------------------------
@SETTINGS
@given(cameras, point, point, support)
def test_negatives_never_true(cam, pa, pb, sup):
    o = CaptionOracle()
    s = scene_of(cam, pa, pb, *sup)
    try:
        rel = o.relation(s, "a", "b")
    except CaptionError:
        return
    negs = hard_negatives(rel)
    assert len(negs) == len(set(negs)) >= 2
    truth = {("red mug", frozenset(rel.terms), "lamp"), ("lamp", frozenset(o.relation(s, "b", "a").terms), "red mug")}
    for n in negs:
        subj, ts, ref = parse_caption(n)
        assert (subj, frozenset(ts), ref) not in truth
        assert n != rel.caption
    # swap comes first; one flip per term; all-flipped for multi-term relations
    assert negs[0] == T.make_caption("lamp", rel.terms, "red mug")
    assert len(negs) == 1 + len(rel.terms) + (len(rel.terms) > 1)


# ---- pair selection --------------------------------------------------------------------
def test_pair_selection_rules():
    objs = [
        ObjectState("a", "mug", "red mug", (0.0, 0.0, 0.5), active=True),
        ObjectState("b", "lamp", "lamp", (0.5, -0.5, 0.5), active=True),
        ObjectState("c", "bowl", "bowl", (0.0, 0.8, 0.5)),
        ObjectState("d", "bowl", "Bowl", (0.0, -0.8, 0.5)),  # duplicate description: ambiguous
        ObjectState("e", "vase", "vase", (0.8, 0.0, 0.5), visible=False),
        ObjectState("f", "cup", "cup", (-0.8, 0.0, 0.5)),
        ObjectState("g", "pot", "pot", (-0.8, 0.5, 0.5)),
    ]
    s = SceneState("s", "kitchen", 0, FIXED_CAM, objs)
    assert [o.id for o in eligible_objects(s)] == ["a", "b", "f", "g"]
    o = CaptionOracle()
    rels = o.caption_scene(s)
    pairs = {(r.subject_id, r.reference_id) for r in rels}
    assert pairs == {("a", "b"), ("a", "f"), ("a", "g"), ("b", "f"), ("b", "g")}  # f-g: no active object
    assert all(r.negatives for r in rels)
    assert len(o.caption_scene(s, max_pairs=2, rng=3)) == 2
    r1 = o.caption_scene(s, rng=np.random.default_rng(5))
    r2 = o.caption_scene(s, rng=np.random.default_rng(5))
    assert [r.caption for r in r1] == [r.caption for r in r2]
    assert {frozenset((r.subject_id, r.reference_id)) for r in r1} == {frozenset(p) for p in pairs}
    o_all = CaptionOracle(OracleConfig(require_active=False))
    assert len(o_all.caption_scene(s)) == 6
    # margin: a pair 1 deg from the 22.5 deg boundary is dropped with a 5 deg margin
    s2 = scene_of(FIXED_CAM, (0.0, 0.0, 0.5), at_bearing(23.5))
    assert len(CaptionOracle().caption_scene(s2)) == 1
    assert CaptionOracle(OracleConfig(boundary_margin_deg=5.0)).caption_scene(s2) == []


def test_vertical_separation_option():
    """A tall plant beside a flat bowl on one shelf: "above" by centres (paper), level with
    vertical_requires_separation; a can resting on the bowl stays "on"."""
    objs = [
        ObjectState("plant", "plant", "potted plant", (0.0, 0.2, 1.17), size=(0.15, 0.15, 0.40)),
        ObjectState("bowl", "bowl", "yellow bowl", (0.0, 0.0, 0.99), size=(0.20, 0.20, 0.06)),
        ObjectState("lamp", "lamp", "lamp", (0.0, 0.05, 1.60), size=(0.2, 0.2, 0.3)),
    ]
    s = SceneState("s", "bedroom", 0, FIXED_CAM, objs)
    assert CaptionOracle().relation(s, "plant", "bowl").terms == [T.ABOVE, T.LEFT]
    sep = CaptionOracle(OracleConfig(vertical_requires_separation=True))
    assert sep.relation(s, "plant", "bowl").terms == [T.LEFT]
    assert sep.relation(s, "bowl", "plant").terms == [T.RIGHT]
    assert sep.relation(s, "lamp", "bowl").terms == [T.ABOVE]


@SETTINGS
@given(cameras, point, point, st.floats(0.0, 1.0), st.floats(0.0, 1.0), support)
def test_antisymmetry_with_separation(cam, pa, pb, ha, hb, sup):
    o = CaptionOracle(OracleConfig(vertical_requires_separation=True, boundary_margin_deg=3.0))
    s = scene_of(cam, pa, pb, *sup)
    s.objects[0].size, s.objects[1].size = (0.1, 0.1, ha), (0.1, 0.1, hb)
    try:
        ab = o.relation(s, "a", "b")
    except CaptionError:
        return
    assert o.relation(s, "b", "a").terms == T.inverse_terms(ab.terms)
    rels = o.caption_scene(s)
    g = pair_geometry(s, s.object("a"), s.object("b"))
    kept = o.boundary_margin_deg(g, ab.terms, o.vertically_separated(s.object("a"), s.object("b"))) >= 3.0
    assert len(rels) == int(kept)


def test_pair_ray_frame_follows_perspective():
    """Two objects far to the image right, one 0.9 m nearer and 0.28 m further right: 17 deg
    off the camera axis ("in front" by camera yaw) but 27 deg off the ray from the camera
    ("in front and to the right" with horizontal_frame="pair_ray")."""
    cam = CameraModel.look_at((-1.9, 0.0, 1.6), (0.0, 0.0, 0.5), 64, 64, 60.0)  # image right = -y
    s = scene_of(cam, (-0.33, -0.48, 0.5), (0.58, -0.20, 0.5), desc=("pot", "bowl"))
    assert CaptionOracle().relation(s, "a", "b").terms == [T.IN_FRONT]
    assert CaptionOracle(OracleConfig(horizontal_frame="pair_ray")).relation(s, "a", "b").terms == [T.IN_FRONT, T.RIGHT]
