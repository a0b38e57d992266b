"""Fuzz the ``sim_bridge`` node's ``~/reset_scene`` and ``~/apply_action`` services.

One real sim_bridge process (MuJoCo, 64 px) in its own ROS domain; an in-process client sends
hypothesis-generated requests over every field:

- reset_scene: any uint32 seed, scene types (known, empty = by seed, unknown, unicode, 100 kB).
- apply_action: action types (swap/teleport/place, unknown, empty, unicode, 100 kB), object ids
  (active ones of the current scene, non-active scene objects, container ids, unknown, empty,
  unicode, 100 kB), container/receptacle ids (same classes), target positions (in the room,
  far, huge finite 1e300, NaN, +/-inf) and orientations (unit yaw, zero, unnormalised, huge,
  NaN/inf).

Every request gets an answer; a bad one (unknown type, NaN/inf pose, unknown/empty object id
...) answers success=false with a non-empty reason; a successful one carries the scene and an
image of the configured size. At the end the node is alive, a good reset still answers with
the same scene as before (determinism survives the fuzz), and its RSS grew < 300 MB.
Requests per kind go to results/fuzz_counts.json ("sim_bridge/...").
"""

from __future__ import annotations

import math
import os
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reliability_common import Counts, call_service, node_under_test, report_fuzz, rss_mb

pytestmark = pytest.mark.timeout(300)

N_RESET = int(os.environ.get("RLS3_FUZZ_RESET_EXAMPLES", "150"))
N_APPLY = int(os.environ.get("RLS3_FUZZ_APPLY_EXAMPLES", "400"))
RESET = "/sim_bridge/reset_scene"
APPLY = "/sim_bridge/apply_action"
SIZE = 64
BIG = 100_000
RSS_GROWTH_MB = 300.0
WARMUP_RESETS = 30
SCENE_TYPES = ["kitchen", "living_room", "bedroom", "dining_room"]

_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)


@pytest.fixture(scope="module")
def bridge(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz_sim")
    args = ["-m", "rls3_ros.ros.nodes.sim_bridge", "--ros-args", "-p", f"image_size:={SIZE}", "-p", "seed:=3"]
    with node_under_test(root, args, "sim_bridge", "fuzz_sim_client") as (proc, ros_node):
        from rls3_msgs.srv import ApplyAction, ResetScene

        reset = ros_node.create_client(ResetScene, RESET)
        apply = ros_node.create_client(ApplyAction, APPLY)
        proc.wait_for_output("sim_bridge ready", 90)
        assert reset.wait_for_service(timeout_sec=30) and apply.wait_for_service(timeout_sec=30)
        # warm-up: MuJoCo model builds take the process from ~0.3 to ~0.7 GB over the first
        # tens of scenes (allocator arenas; it plateaus, measured); RSS growth is checked after it
        rss_cold = rss_mb(proc.proc.pid)
        for i in range(WARMUP_RESETS):
            assert call_service(reset, ResetScene.Request(seed=(i * 2654435761) % 2 ** 32)) is not None
        print(f"\nsim_bridge RSS {rss_cold:.0f} MB cold, {rss_mb(proc.proc.pid):.0f} MB after {WARMUP_RESETS} resets")
        yield proc, reset, apply


def _check_scene_answer(resp):
    assert len(resp.scene.objects) > 0
    assert (resp.image.width, resp.image.height, resp.image.encoding) == (SIZE, SIZE, "rgb8")
    assert len(resp.image.data) == SIZE * SIZE * 3
    assert resp.scene.header.stamp == resp.image.header.stamp


# -- reset_scene --------------------------------------------------------------------------------
_scene_types = st.one_of(
    st.tuples(st.just("known"), st.sampled_from(SCENE_TYPES)),
    st.tuples(st.just("empty"), st.just("")),
    st.tuples(st.just("unknown"), st.sampled_from(["garage", "Kitchen", "kitchen ", "office", "bathroom"])),
    st.tuples(st.just("unicode"), _text.filter(lambda s: s not in SCENE_TYPES and s != "")),
    st.tuples(st.just("oversize"), st.just("k" * BIG)),
)
_seeds = st.one_of(st.tuples(st.just("small"), st.integers(0, 1000)),
                   st.tuples(st.just("any"), st.integers(0, 2 ** 32 - 1)),
                   st.tuples(st.just("extreme"), st.sampled_from([0, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1])))


def test_reset_scene_answers_every_generated_request(bridge):
    from rls3_msgs.srv import ResetScene

    proc, reset, _ = bridge
    first = call_service(reset, ResetScene.Request(seed=11, scene_type="kitchen"))
    assert first is not None and first.success, getattr(first, "message", "no answer")
    rss0 = rss_mb(proc.proc.pid)
    counts = Counts()
    t0 = time.monotonic()

    @settings(max_examples=N_RESET, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(_seeds, _scene_types)
    def run(seed, scene_type):
        (sk, s), (tk, t) = seed, scene_type
        counts.add("total", f"seed:{sk}", f"scene_type:{tk}")
        resp = call_service(reset, ResetScene.Request(seed=s, scene_type=t))
        assert resp is not None, f"no answer to reset(seed={s}, scene_type={t[:40]!r})"
        counts.add("answer:success" if resp.success else "answer:refused")
        expect_ok = t in SCENE_TYPES or t == ""
        assert resp.success == expect_ok, (sk, tk, resp.message[:300])
        if resp.success:
            _check_scene_answer(resp)
            assert resp.scene.seed == s and (t == "" or resp.scene.scene_type == t)
        else:
            assert resp.message.strip()
        assert proc.alive(), proc.output()[-3000:]

    run()
    wall = time.monotonic() - t0
    again = call_service(reset, ResetScene.Request(seed=11, scene_type="kitchen"))
    assert again is not None and again.success
    assert bytes(again.image.data) == bytes(first.image.data), "same seed, different image after the fuzz"
    rss1 = rss_mb(proc.proc.pid)
    report_fuzz("sim_bridge/reset_scene", counts, wall, rss0, rss1)
    assert proc.alive() and "Traceback" not in proc.output()
    assert rss1 - rss0 < RSS_GROWTH_MB


# -- apply_action -------------------------------------------------------------------------------
_action_types = st.one_of(
    st.tuples(st.just("swap"), st.just("swap")),
    st.tuples(st.just("teleport"), st.just("teleport")),
    st.tuples(st.just("place"), st.just("place")),
    st.tuples(st.just("empty"), st.just("")),
    st.tuples(st.just("unknown"), st.sampled_from(["SWAP", "move", "push", "teleport ", "delete"])),
    st.tuples(st.just("unicode"), _text.filter(lambda s: s not in ("swap", "teleport", "place", ""))),
    st.tuples(st.just("oversize"), st.just("t" * BIG)),
)
_id_kinds = st.sampled_from(["active", "active", "active", "scene_other", "container", "unknown", "empty",
                             "unicode", "oversize"])
_coord = st.one_of(
    st.tuples(st.just("room"), st.floats(-2.0, 2.0)),
    st.tuples(st.just("far"), st.floats(-1e4, 1e4)),
    st.tuples(st.just("huge"), st.sampled_from([1e300, -1e300, 1.7976931348623157e308, 5e-324])),
    st.tuples(st.just("nan"), st.just(math.nan)),
    st.tuples(st.just("inf"), st.sampled_from([math.inf, -math.inf])),
)
_quat = st.one_of(
    st.tuples(st.just("unit_yaw"), st.floats(-math.pi, math.pi).map(lambda a: (0.0, 0.0, math.sin(a / 2), math.cos(a / 2)))),
    st.tuples(st.just("zero"), st.just((0.0, 0.0, 0.0, 0.0))),
    st.tuples(st.just("unnormalised"), st.tuples(*[st.floats(-10, 10)] * 4)),
    st.tuples(st.just("huge"), st.tuples(*[st.sampled_from([1e300, -1e300, 1.0])] * 4)),
    st.tuples(st.just("nan_inf"), st.tuples(*[st.sampled_from([math.nan, math.inf, -math.inf, 0.0])] * 4)),
)


def _pick_id(draw, kind, scene):
    active = [o.id for o in scene.objects if o.active]
    other = [o.id for o in scene.objects if not o.active]
    if kind == "active" and active:
        return draw(st.sampled_from(active))
    if kind == "scene_other" and other:
        return draw(st.sampled_from(other))
    if kind == "container" and scene.container_ids:
        return draw(st.sampled_from(list(scene.container_ids)))
    if kind == "empty":
        return ""
    if kind == "oversize":
        return "o" * BIG
    if kind == "unicode":
        return draw(_text.filter(lambda s: s and s not in active + other + list(scene.container_ids)))
    return draw(st.sampled_from(["nope", "mug_99", "floor ", "table_0x", "__all__"]))


def test_apply_action_answers_every_generated_request(bridge):
    from rls3_msgs.srv import ApplyAction, ResetScene

    proc, reset, apply = bridge
    r = call_service(reset, ResetScene.Request(seed=5, scene_type="living_room"))
    assert r is not None and r.success
    state = {"scene": r.scene}
    rss0 = rss_mb(proc.proc.pid)
    counts = Counts()
    t0 = time.monotonic()

    @st.composite
    def requests(draw):
        scene = state["scene"]
        # a third fully random; the rest well formed except (maybe) one field, so real moves happen too
        mutate = draw(st.sampled_from(["all", "all", "all", "none", "none", "none", "action_type", "object_id",
                                       "container_id", "receptacle_id", "position", "orientation"]))

        def pick(field, full, valid):
            return draw(full if mutate in ("all", field) else valid)

        ak, at = pick("action_type", _action_types, _action_types.filter(lambda t: t[0] in ("swap", "teleport", "place")))
        ok_kind = pick("object_id", _id_kinds, st.just("active"))
        ck = pick("container_id", _id_kinds, st.sampled_from(["empty", "container"]))
        rk = pick("receptacle_id", st.sampled_from(["any", "any", "scene_other", "active", "unknown", "unicode", "oversize"]),
                  st.just("any"))
        req = ApplyAction.Request(action_type=at, object_id=_pick_id(draw, ok_kind, scene),
                                  container_object_id="" if ck == "empty" else _pick_id(draw, ck, scene),
                                  receptacle_id="" if rk == "any" else _pick_id(draw, rk, scene))
        room = st.tuples(st.just("room"), st.floats(-1.5, 1.5))
        (xk, x), (yk, y), (zk, z) = (pick("position", _coord, room) for _ in range(3))
        qk, (qx, qy, qz, qw) = pick("orientation", _quat, _quat.filter(lambda q: q[0] == "unit_yaw"))
        p, o = req.target_pose.position, req.target_pose.orientation
        p.x, p.y, p.z, o.x, o.y, o.z, o.w = x, y, z + 0.8 if zk == "room" else z, qx, qy, qz, qw
        pos_kind = "nonfinite" if "nan" in (xk, yk, zk) or "inf" in (xk, yk, zk) else max(
            (xk, yk, zk), key=["room", "far", "huge"].index)
        labels = [f"action_type:{ak}", f"object_id:{ok_kind}", f"container_id:{ck}", f"receptacle_id:{rk}",
                  f"position:{pos_kind}", f"orientation:{qk}"]
        finite = all(math.isfinite(v) for v in (x, y, z, qx, qy, qz, qw))
        known_action = at in ("swap", "teleport", "place")
        active_ids = {o.id for o in scene.objects if o.active}
        must_fail = (not known_action) or (not finite) or req.object_id not in active_ids
        return req, labels, must_fail

    @settings(max_examples=N_APPLY, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(requests())
    def run(case):
        req, labels, must_fail = case
        counts.add("total", *labels)
        resp = call_service(apply, req)
        assert resp is not None, f"no answer to apply {labels}"
        kind = "answer:refused" if not resp.success else ("answer:valid" if resp.valid else f"answer:invalid")
        counts.add(kind)
        if must_fail:
            assert not resp.success, (labels, resp.message[:300])
        if resp.success:
            _check_scene_answer(resp)
            assert resp.message.strip()
            if not resp.valid:
                assert resp.reason.strip()
            state["scene"] = resp.scene
        else:
            assert resp.message.strip(), f"refusal without a reason for {labels}"
            assert not resp.valid
        assert proc.alive(), proc.output()[-3000:]

    run()
    wall = time.monotonic() - t0
    # still a working simulator: the same scene again, and a swap that answers
    again = call_service(reset, ResetScene.Request(seed=5, scene_type="living_room"))
    assert again is not None and again.success
    assert [o.id for o in again.scene.objects] == [o.id for o in r.scene.objects]
    assert [v for o in again.scene.objects for v in (o.pose.position.x, o.pose.position.y)] == pytest.approx(
        [v for o in r.scene.objects for v in (o.pose.position.x, o.pose.position.y)], abs=1e-6)
    act = next(o.id for o in again.scene.objects if o.active)
    swap = call_service(apply, ApplyAction.Request(action_type="swap", object_id=act))
    assert swap is not None and swap.success, getattr(swap, "message", "no answer")
    rss1 = rss_mb(proc.proc.pid)
    report_fuzz("sim_bridge/apply_action", counts, wall, rss0, rss1)
    assert counts.c["answer:valid"] > 0, "no valid move in the whole fuzz run"
    assert proc.alive() and "Traceback" not in proc.output()
    assert rss1 - rss0 < RSS_GROWTH_MB
