"""Fuzz the ``spatial_query`` node's ``~/query`` service with generated requests.

One real node process (tiny real torch model, ``vlm_test_model``) in its own ROS domain; an
in-process client sends hypothesis-generated requests over every field: query types (known,
case/space variants, unknown, empty, unicode, 100 kB), object names (valid, empty, blank,
unicode, 100 kB), relations (valid phrases, garbage), candidates, headers (any stamps), and
images (every supported encoding, images under the 16x16 px minimum, unsupported/empty
encodings, big-endian flag, width / height / step not matching the data, padded rows, empty
image = camera topic with no frames, 4096x4096 claims with a few bytes, NaN/inf float images,
a real 384x384 image).

Every request must get an answer: success=false with a non-empty reason for a bad one, and
success=true for every well-formed one (the oracle below says which is which: e.g. images under
16x16 px and a subject that is the reference are bad). At the end the
node is alive, still answers a good query, and its RSS grew by less than 300 MB. Requests per
kind are printed and written to results/fuzz_counts.json ("spatial_query").
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reliability_common import TEST_MODEL, Counts, call_service, node_under_test, report_fuzz, rss_mb
from rls3_ros.vlm.answers import MIN_IMAGE_SIDE

pytestmark = pytest.mark.timeout(240)

N_EXAMPLES = int(os.environ.get("RLS3_FUZZ_QUERY_EXAMPLES", "400"))
SERVICE = "/spatial_query/query"
BIG = 100_000  # oversize strings [characters]
RSS_GROWTH_MB = 300.0

GOOD_RELATIONS = ["left", "to the left of", "right", "above", "below", "in front", "behind",
                  "above and behind", "in front and right", "level"]


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz_query")
    args = ["-m", "rls3_ros.ros.nodes.spatial_query", "--ros-args", "-p", f"model:={TEST_MODEL}",
            "-p", "image_qos:=reliable", "-p", "follow_adapter_topic:=false"]
    with node_under_test(root, args, "spatial_query", "fuzz_query_client") as (proc, ros_node):
        from rls3_msgs.srv import SpatialQuery

        client = ros_node.create_client(SpatialQuery, SERVICE)
        proc.wait_for_output("model ready", 90)
        assert client.wait_for_service(timeout_sec=30)
        yield proc, ros_node, client


# -- strategies -------------------------------------------------------------------------------
_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)


def _names():
    return st.one_of(
        st.tuples(st.just("valid"), st.sampled_from(["red square", "blue square", "mug", "lamp", "Chair 2"])),
        st.tuples(st.just("empty"), st.just("")),
        st.tuples(st.just("blank"), st.sampled_from([" ", "\t\n", "\u3000", "  \u2003 "])),
        st.tuples(st.just("unicode"), _text.filter(lambda s: s.strip() != "")),
        st.tuples(st.just("oversize"), st.sampled_from(["x", "ü", "漢", "a b "]).map(lambda c: (c * BIG)[:BIG])),
    )


_query_types = st.one_of(
    st.tuples(st.just("known"), st.sampled_from(["where", "check", "what"])),
    st.tuples(st.just("known_variant"), st.sampled_from([" WHERE ", "Check", "wHaT\t"])),
    st.tuples(st.just("empty"), st.just("")),
    st.tuples(st.just("unknown"), st.sampled_from(["who", "where?", "left", "ask", "whereis"])),
    st.tuples(st.just("unicode"), _text),
    st.tuples(st.just("oversize"), st.just("w" * BIG)),
)

_relations = st.one_of(
    st.tuples(st.just("valid"), st.sampled_from(GOOD_RELATIONS)),
    st.tuples(st.just("empty"), st.just("")),
    st.tuples(st.just("garbage"), _text),
    st.tuples(st.just("oversize"), st.just("left and " * (BIG // 9))),
)

_ENC = {"rgb8": (1, 3), "bgr8": (1, 3), "rgba8": (1, 4), "bgra8": (1, 4), "mono8": (1, 1), "16UC1": (2, 1), "32FC1": (4, 1)}


@st.composite
def _images(draw):
    """(kind, sensor_msgs/Image, expected_ok)."""
    from sensor_msgs.msg import Image

    kind = draw(st.sampled_from(["valid", "valid_padded", "valid_large", "too_small", "non_colour", "float_nan_inf",
                                 "bad_encoding", "bigendian", "step_too_small", "data_short", "data_long",
                                 "huge_claim", "zero_size", "empty_topic"]))
    msg = Image()
    if kind == "empty_topic":  # width = height = 0, no data: the node looks for a camera frame (none here)
        return kind, msg, False
    enc = draw(st.sampled_from(["rgb8", "bgr8", "rgba8", "bgra8", "mono8"]))
    if kind in ("non_colour",):
        enc = draw(st.sampled_from(["16UC1", "32FC1"]))
    if kind == "float_nan_inf":
        enc = "32FC1"
    h, w = draw(st.integers(MIN_IMAGE_SIDE, 48)), draw(st.integers(MIN_IMAGE_SIDE, 48))
    if kind == "valid_large":
        h = w = 384
    elif kind == "too_small":  # a well-formed image under the minimum size: refused
        h, w = draw(st.sampled_from([(1, 1), (1, 64), (2, 1), (MIN_IMAGE_SIDE - 1, 48), (48, 3)]))
    isz, ch = _ENC[enc]
    row = w * ch * isz
    step = row + (draw(st.integers(1, 16)) if kind == "valid_padded" else 0)
    n = step * h
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    if enc == "32FC1":
        vals = rng.choice(np.array([np.nan, np.inf, -np.inf, 0.0, 1e38, -1.0], np.float32), size=n // 4)
        data = vals.astype("<f4").tobytes()
    else:
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    ok = kind in ("valid", "valid_padded", "valid_large")
    if kind == "bad_encoding":
        enc = draw(st.one_of(st.sampled_from(["", "RGB8", "yuv422", "bayer_rggb8", "8UC3", "rgb16", "jpeg"]), _text))
    elif kind == "bigendian":  # byte order is honoured (a no-op for 8-bit encodings): still valid
        msg.is_bigendian = 1
        ok = True
    elif kind == "step_too_small":
        step = draw(st.integers(0, max(0, row - 1)))
    elif kind == "data_short":
        data = data[: draw(st.integers(0, max(0, n - 1)))]
    elif kind == "data_long":  # more bytes than step*height: extra bytes are ignored, still a valid image
        data = data + bytes(draw(st.integers(1, 64)))
        ok = True
    elif kind == "huge_claim":
        h, w = draw(st.sampled_from([(4096, 4096), (4097, 4096), (65535, 65535), (2 ** 32 - 1, 2 ** 32 - 1), (1, 2 ** 31)]))
        step = draw(st.sampled_from([0, w * ch * isz, 2 ** 32 - 1]))
        step = min(step, 2 ** 32 - 1)
        data = data[:64]
    elif kind == "zero_size":
        h, w = draw(st.sampled_from([(0, 8), (8, 0), (0, 0)]))
        data = data[:32] or b"\x01"
    msg.encoding, msg.height, msg.width, msg.step = enc, h, w, step
    msg.data = data
    return kind, msg, ok


@st.composite
def _requests(draw):
    """(request, labels, expected_success)."""
    from rls3_msgs.srv import SpatialQuery
    from std_msgs.msg import Header

    from rls3_ros.vlm.answers import MAX_TEXT_CHARS, QueryError, check_relation

    def named(x):  # a usable object name: not blank, not oversize (refused with a reason)
        return x.strip() != "" and len(x.strip()) <= MAX_TEXT_CHARS

    req = SpatialQuery.Request()
    # a third of the requests are fully random; the rest are well formed except (maybe) one field,
    # so both the refusals and the answers of every query type get exercised
    mutate = draw(st.sampled_from(["all", "all", "all", "none", "none", "query_type", "subject", "reference",
                                   "relation", "candidates", "image", "image", "image", "header"]))

    def pick(field, full, valid):
        return draw(full if mutate in ("all", field) else valid)

    qk, qt = pick("query_type", _query_types, _query_types.filter(lambda t: t[0].startswith("known")))
    sk, subj = pick("subject", _names(), _names().filter(lambda t: t[0] in ("valid", "unicode", "oversize")))
    rk, ref = pick("reference", _names(), _names().filter(lambda t: t[0] in ("valid", "unicode", "oversize")))
    lk, rel = pick("relation", _relations, st.tuples(st.just("valid"), st.sampled_from(GOOD_RELATIONS)))
    ck = pick("candidates", st.sampled_from(["none", "valid", "blank", "mixed", "many"]),
              st.sampled_from(["valid", "mixed", "many"]))
    cands = {"none": [], "valid": ["red square", "green square"], "blank": ["", " "],
             "mixed": ["", "mug", "\u00e9clair"], "many": [f"object {i}" for i in range(200)]}[ck]
    ik, img, img_ok = pick("image", _images(), _images().filter(lambda t: t[2]))
    hk = pick("header", st.sampled_from(["zero", "stamp", "max_stamp", "frame_id_unicode"]), st.just("zero"))
    h = Header()
    if hk == "stamp":
        h.stamp.sec, h.stamp.nanosec = draw(st.integers(0, 2 ** 31 - 1)), draw(st.integers(0, 999_999_999))
    elif hk == "max_stamp":
        h.stamp.sec, h.stamp.nanosec = 2 ** 31 - 1, 999_999_999
    elif hk == "frame_id_unicode":
        h.frame_id = draw(_text)
    img.header = h
    req.header, req.query_type, req.subject, req.reference, req.relation = h, qt, subj, ref, rel
    req.candidates = cands
    req.image = img

    q = qt.strip().lower()
    ok = img_ok and q in ("where", "check", "what") and named(ref)
    if q in ("where", "check"):  # two different objects
        ok = ok and named(subj) and subj.strip().lower() != ref.strip().lower()
    if q in ("check", "what"):
        try:
            check_relation(rel)
        except QueryError:
            ok = False
    if q == "what":  # a candidate that is the reference is not ranked
        ok = ok and any(c.strip() and c.strip().lower() != ref.strip().lower() for c in cands)
    labels = [f"query_type:{qk}", f"subject:{sk}", f"reference:{rk}", f"relation:{lk}", f"candidates:{ck}",
              f"image:{ik}", f"header:{hk}"]
    return req, labels, ok


# -- the test ---------------------------------------------------------------------------------
def _good_request():
    from rls3_ros.ros.client import SpatialQueryClient

    img = np.full((64, 64, 3), 230, np.uint8)
    img[10:20, 5:15] = (220, 30, 30)
    img[10:20, 40:50] = (30, 60, 220)
    return SpatialQueryClient.make_request("where", "red square", "blue square", image=img)


def test_query_service_answers_every_generated_request(node):
    proc, ros_node, client = node
    good = call_service(client, _good_request())
    assert good is not None and good.success, getattr(good, "message", "no answer")
    rss0 = rss_mb(proc.proc.pid)
    counts = Counts()
    failures = []
    t0 = time.monotonic()

    @settings(max_examples=N_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(_requests())
    def run(case):
        req, labels, expect_ok = case
        counts.add("total", *labels)
        resp = call_service(client, req)
        if resp is None:
            failures.append(("no answer", labels))
            raise AssertionError(f"no answer within 60 s to a request {labels}")
        counts.add("answer:success" if resp.success else "answer:refused")
        if not resp.success:
            assert resp.message.strip(), f"refusal without a reason for {labels}"
        assert resp.success == expect_ok, (labels, resp.success, resp.message[:300])
        if resp.success:
            assert resp.answer.strip() and 0.0 <= resp.confidence <= 1.0
        assert proc.alive(), f"node died on {labels}:\n{proc.output()[-3000:]}"

    run()
    wall = time.monotonic() - t0
    assert proc.alive()
    again = call_service(client, _good_request())
    assert again is not None and again.success, getattr(again, "message", "no answer")
    assert list(again.term_probabilities) == pytest.approx(list(good.term_probabilities), abs=1e-6)
    rss1 = rss_mb(proc.proc.pid)
    assert "Traceback" not in proc.output()
    report_fuzz("spatial_query/query", counts, wall, rss0, rss1)
    assert rss1 - rss0 < RSS_GROWTH_MB, f"RSS grew {rss1 - rss0:.0f} MB"
    assert counts.c["total"] >= min(N_EXAMPLES, 100)
