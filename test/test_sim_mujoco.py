"""The embedded MuJoCo backend: real scene builds, renders and physics-checked moves."""

import threading

import numpy as np
import pytest

from rls3_ros.sim.backend import BAD_REQUEST, FLOATING, OUT_OF_VIEW, OVERLAP, PLACE, SWAP, TELEPORT, MoveAction
from rls3_ros.sim.factory import make_backend
from rls3_ros.sim.objects import CATEGORIES, ROOM_CATEGORIES
from rls3_ros.sim.rooms import SCENE_TYPES

SIZE = 96


@pytest.fixture(scope="module")
def backend():
    b = make_backend("mujoco", image_size=SIZE, seed=0)
    yield b
    b.close()


def _positions(scene):
    return {o.id: o.position for o in scene.objects}


def test_catalogue_has_enough_recognisable_categories():
    assert len(CATEGORIES) >= 12
    for room, cats in ROOM_CATEGORIES.items():
        assert len(set(cats)) >= 8, room
        assert set(cats) <= set(CATEGORIES)


@pytest.mark.parametrize("scene_type", SCENE_TYPES)
def test_scenes_build_for_every_type_and_many_seeds(backend, scene_type):
    lo, hi = None, None
    for seed in range(4):
        s = backend.reset(seed, scene_type)
        assert s.scene_type == scene_type and s.seed == seed and s.backend == "mujoco"
        assert len(s.objects) == 3 and all(o.active for o in s.objects)
        assert len(s.container_ids) == 5 and not set(s.container_ids) & {o.id for o in s.objects}
        descs = [o.description for o in s.objects] + [c.description for c in backend.container_objects()]
        assert len(set(descs)) == len(descs), descs  # descriptions are unambiguous within the scene
        lo, hi = backend.placement_bounds()
        for o in s.objects:
            assert o.visible and o.visible_fraction >= backend.min_visible_fraction, o
            x0, y0, x1, y1 = o.bbox
            assert 0 <= x0 < x1 <= SIZE and 0 <= y0 < y1 <= SIZE
            assert o.supported_by, o  # rests on something after settling
            assert all(v > 0.01 for v in o.size)
            assert all(l - 0.3 <= p <= h + 0.3 for l, p, h in zip(lo, o.position, hi)), (o.position, lo, hi)
    # the placement region reaches several heights (floor, furniture, shelf levels) for above/below
    tops = sorted({round(r[1], 2) for r in backend.receptacles()})
    assert tops[0] == 0.0 and tops[-1] > 0.8 and len(tops) >= 4, tops
    ids = [r[0] for r in backend.receptacles()]
    assert "shelf_lower" in ids and "shelf_top" in ids and "floor" in ids


def test_renders_are_deterministic_per_seed():
    a = make_backend("mujoco", image_size=64, seed=5)
    b = make_backend("mujoco", image_size=64, seed=5)
    try:
        s1 = a.reset(5)
        r1 = a.render()
        b.reset(6)
        s2 = b.reset(5)  # another backend instance, after another scene
        r2 = b.render()
    finally:
        a.close()
        b.close()
    assert np.array_equal(r1.rgb, r2.rgb) and np.array_equal(r1.segmentation, r2.segmentation)
    assert _positions(s1) == _positions(s2)
    assert r1.depth.shape == (64, 64) and np.all(np.isfinite(r1.depth)) and 0.2 < float(np.median(r1.depth)) < 10


def test_different_seeds_give_different_scenes(backend):
    backend.reset(1, "kitchen")
    a = backend.render().rgb
    backend.reset(2, "kitchen")
    b = backend.render().rgb
    assert not np.array_equal(a, b)


def test_segmentation_boxes_match_projected_3d_boxes(backend):
    for seed in (0, 3):
        s = backend.reset(seed)
        r = backend.render()
        for i, o in enumerate(s.objects):
            assert r.boxes[o.id] == o.bbox
            ys, xs = np.nonzero(r.segmentation == i)
            assert len(xs) > 0
            lo = np.array(o.position) - np.array(o.size) / 2
            hi = np.array(o.position) + np.array(o.size) / 2
            corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
            uv = s.camera.project(corners)
            u0, v0 = uv.min(0)
            u1, v1 = uv.max(0)
            x0, y0, x1, y1 = o.bbox
            tol = 1.5
            # the mask lies inside the projection of the object's 3D box ...
            assert x0 >= u0 - tol and y0 >= v0 - tol and x1 <= u1 + tol and y1 <= v1 + tol, (o.bbox, uv.min(0), uv.max(0))
            # ... and fills a good part of it (the box is only slightly larger than the object)
            area_mask_box = (x1 - x0) * (y1 - y0)
            area_proj = (min(u1, SIZE) - max(u0, 0)) * (min(v1, SIZE) - max(v0, 0))
            assert area_mask_box >= 0.3 * area_proj, (o.id, area_mask_box, area_proj)


def test_overlapping_teleport_is_rejected_and_scene_unchanged(backend):
    s = backend.reset(2)
    before_rgb = backend.render().rgb.copy()
    a, b = s.objects[0], s.objects[1]
    res = backend.apply(MoveAction(TELEPORT, a.id, position=b.position))
    assert not res.valid and res.reason == OVERLAP
    after = backend.state()
    assert _positions(after) == _positions(s)
    assert [o.orientation for o in after.objects] == [o.orientation for o in s.objects]
    assert np.array_equal(backend.render().rgb, before_rgb)


def test_teleport_into_the_air_is_floating_and_out_of_view_is_rejected(backend):
    s = backend.reset(4)
    o = s.objects[0]
    res = backend.apply(MoveAction(TELEPORT, o.id, position=(0.0, 0.3, 1.9)))
    assert not res.valid and res.reason == FLOATING
    # on the floor right beside the camera: physically fine, but not in the image
    cam = s.camera.position
    res = backend.apply(MoveAction(PLACE, o.id, position=(cam[0], cam[1] + 0.2, 0.0), receptacle_id="floor"))
    assert not res.valid and res.reason == OUT_OF_VIEW, res.reason
    assert _positions(backend.state()) == _positions(s)


def test_bad_requests_keep_the_scene(backend):
    s = backend.reset(1)
    for a in (MoveAction("jump", s.objects[0].id), MoveAction(SWAP, "no_such_object"),
              MoveAction(TELEPORT, s.objects[0].id, position=None),
              MoveAction(SWAP, s.objects[0].id, container_object_id="not_in_container"),
              MoveAction(PLACE, s.objects[0].id, position=(0.0, 0.0, 0.5), receptacle_id="moon")):
        res = backend.apply(a)
        assert not res.valid and res.reason == BAD_REQUEST and res.message
    assert _positions(backend.state()) == _positions(s)


def test_stacked_object_settles_on_the_object_below(backend):
    stackable = [c for c, cat in CATEGORIES.items() if cat.stackable_top]
    for seed in range(40):
        s = backend.reset(seed)
        bases = [o for o in s.objects if o.category in stackable]
        if not bases:
            continue
        base = bases[0]
        for top in sorted((o for o in s.objects if o.id != base.id), key=lambda o: o.size[2]):
            res = backend.apply(MoveAction(PLACE, top.id, position=base.position, receptacle_id=base.id))
            if not res.valid:
                continue
            t = res.scene.object(top.id)
            b = res.scene.object(base.id)
            assert t.supported_by == base.id
            assert t.position[2] - t.size[2] / 2 == pytest.approx(b.position[2] + b.size[2] / 2, abs=0.01)
            # it stays: the same scene rendered again shows it in the same place
            assert backend.state().object(top.id).position == t.position
            return
    pytest.fail("no stackable pair settled in 40 scenes")


def test_swap_brings_a_container_object_to_the_same_spot(backend):
    for seed in range(10):
        s = backend.reset(seed)
        for o in s.objects:
            for cid in s.container_ids:
                res = backend.apply(MoveAction(SWAP, o.id, container_object_id=cid))
                if not res.valid:
                    continue
                new = res.scene.object(cid)
                assert new.active and o.id in res.scene.container_ids and cid not in res.scene.container_ids
                assert [x.id for x in res.scene.objects].index(cid) == [x.id for x in s.objects].index(o.id)
                assert np.hypot(new.position[0] - o.position[0], new.position[1] - o.position[1]) < 0.05
                bottom_new = new.position[2] - new.size[2] / 2
                assert bottom_new == pytest.approx(o.position[2] - o.size[2] / 2, abs=0.02)
                return
    pytest.fail("no valid swap in 10 scenes")


def test_random_places_in_bounds_give_many_valid_moves_and_varied_supports(backend):
    rng = np.random.default_rng(0)
    backend.reset(7)
    lo, hi = backend.placement_bounds()
    valid, supports = 0, set()
    for i in range(40):
        s = backend.state()
        o = s.objects[i % 3]
        res = backend.apply(MoveAction(PLACE, o.id, position=tuple(rng.uniform(lo, hi)), yaw=float(rng.uniform(-3, 3))))
        if res.valid:
            valid += 1
            supports.add(res.scene.object(o.id).supported_by)
    assert valid >= 8, valid
    assert len(supports) >= 3, supports


def test_public_methods_are_thread_safe(backend):
    backend.reset(0)
    errors = []

    def work():
        try:
            for _ in range(5):
                assert len(backend.state().objects) == 3
                assert backend.render().rgb.shape == (SIZE, SIZE, 3)
        except Exception as e:  # noqa: BLE001 - collected for the assert
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors


def test_factory_rejects_unknown_names_and_bad_params():
    with pytest.raises(ValueError, match="unknown simulator backend"):
        make_backend("gazebo")
    with pytest.raises(ValueError, match="unknown parameter"):
        make_backend("mujoco", imagesize=64)
    with pytest.raises(ValueError, match="image_size"):
        make_backend("mujoco", image_size=-3)
    with pytest.raises(ValueError, match="scene types"):
        make_backend("mujoco", scene_types=["garage"])


def test_depth_agrees_with_object_positions(backend):
    s = backend.reset(3)
    r = backend.render()
    for i, o in enumerate(s.objects):
        mask = r.segmentation == i
        z_cam = s.camera.world_to_camera(np.array([o.position]))[0, 2]
        # visible surface lies between the box front and its centre along the optical axis
        d = float(np.median(r.depth[mask]))
        assert z_cam - max(o.size) - 0.02 <= d <= z_cam + 0.02, (o.id, d, z_cam)


def test_several_backends_in_one_process_render_concurrently_and_agree():
    backends = [make_backend("mujoco", image_size=48, seed=0) for _ in range(2)]
    out = {}

    def run(i):
        out[i] = []
        for seed in (0, 1):
            backends[i].reset(seed)
            out[i].append(backends[i].render().rgb)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        for b in backends:
            b.close()
    assert len(out[0]) == len(out[1]) == 2
    assert all(np.array_equal(a, b) for a, b in zip(out[0], out[1]))
