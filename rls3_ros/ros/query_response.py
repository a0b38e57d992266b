"""A ``SpatialQuery`` answer as a response and as an annotated image.

``fill_answer`` copies a model's ``QueryAnswer`` into the service response (``answer_source``
"model"); ``where_with_geometry`` replaces a 'where' answer's terms with the hybrid of the text head
and the two located objects' 3D points (``rls3_ros.vlm.where_geometry``); ``located_subject``
names the object whose location the answer carries; ``annotated_image`` draws the named objects'
boxes (from the scene state, solid), the model's own predicted boxes and points (dashed, with
their confidence), the answer text and its confidence (the ``~/annotated`` topic).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from rls3_ros.captions import terms as T
from rls3_ros.core.image_codec import numpy_to_image_msg
from rls3_ros.core.scene import SceneState
from rls3_ros.ros.annotate import draw_annotation, find_object
from rls3_ros.vlm import where_geometry as W
from rls3_ros.vlm.answers import QueryAnswer


def fill_answer(resp, ans: QueryAnswer) -> None:
    """The answered fields of a (successful) ``SpatialQuery.Response`` from ``ans``."""
    resp.terms = list(ans.terms)
    resp.confidence = float(ans.confidence)
    resp.term_names = list(ans.term_probabilities)
    resp.term_probabilities = [float(v) for v in ans.term_probabilities.values()]
    resp.holds = bool(ans.holds)
    resp.ranked_candidates = [c for c, _ in ans.ranked]
    resp.candidate_scores = [float(s) for _, s in ans.ranked]
    resp.answer_source = W.SOURCE_MODEL


def where_with_geometry(resp, ans: QueryAnswer, camera, subject: str, reference: str,
                        policy: W.HybridPolicy = W.DEFAULT_POLICY) -> Optional[str]:
    """Answer a 'where' from the geometry where ``policy`` says (``where_geometry.hybrid_terms``) when
    ``resp``'s subject and reference both have a 3D point and ``camera`` (a ``CameraModel`` of the
    points' optical frame: its pose) is known: ``answer_source`` says which (``model+geometry`` or
    ``model``); when the terms change (also a text head's support term stated alone), ``terms`` and
    ``answer`` follow and ``confidence`` becomes the text head's probability of the least likely
    answered term; ``term_names`` / ``term_probabilities`` stay the text head's. Returns a note for
    the response message when the points are there but no camera pose is, else None."""
    s, r = resp.subject_location, resp.reference_location
    if not (s.has_point_3d and r.has_point_3d):
        return None
    if camera is None:
        return ("terms from the text head only: no camera pose (request camera_orientation or scene state) to place "
                "the 3D points in the world")
    xyz = lambda m: (m.point_3d.point.x, m.point_3d.point.y, m.point_3d.point.z)  # noqa: E731
    terms, source = W.hybrid_terms(ans.terms, W.points_terms(camera, xyz(s), xyz(r)), policy)
    resp.answer_source = source
    if list(terms) != list(ans.terms):
        resp.terms = list(terms)
        resp.answer = T.make_caption(subject, terms, reference)
        resp.confidence = float(min(ans.term_probabilities.get(t, 0.0) for t in terms))
    return None


def request_camera(req, scene_camera):
    """The camera pose a 'where' answer places its 3-D points with: the request's
    ``camera_orientation`` when set (a robot's TF: orientation in a gravity-aligned frame, the
    position irrelevant to relative terms, so the origin; the message default, the identity, is
    "not set": an optical frame looking straight up), else ``scene_camera`` (None = unknown).
    Raises ValueError for an orientation that is not finite or not near unit length."""
    from rls3_ros.core.scene import CameraModel

    q = req.camera_orientation
    xyzw = np.array([q.x, q.y, q.z, q.w], dtype=float)
    if not np.any(xyzw[:3]):  # the message default (identity: an optical frame looking straight up) or all zero
        return scene_camera
    n = float(np.linalg.norm(xyzw)) if np.all(np.isfinite(xyzw)) else float("nan")
    if not (0.9 <= n <= 1.1):
        raise ValueError(f"camera_orientation is not a unit quaternion (norm {n:.3g})")
    h, w = (req.image.height, req.image.width) if req.image.width else (1, 1)
    return CameraModel((0.0, 0.0, 0.0), tuple(float(v) for v in xyzw / n), int(w), int(h), 1.0, 1.0, 0.0, 0.0)


def is_what(req) -> bool:
    return req.query_type.strip().lower() == "what"


def located_subject(req, ans: QueryAnswer) -> str:
    """The subject whose location an answer carries ('what': the best candidate)."""
    return ans.ranked[0][0] if is_what(req) and ans.ranked else req.subject.strip()


def annotated_image(image: np.ndarray, header: Header, scene: Optional[SceneState], req, text: str,
                    confidence: float, ranked: Sequence[Tuple[str, float]], located=()) -> Image:
    """The image with the boxes of the named objects the scene state knows, the model's located
    boxes and points, the answer and its confidence (rgb8, ``header``)."""
    names = [req.subject, req.reference] if not is_what(req) else [ranked[0][0] if ranked else "", req.reference]
    boxes = []
    for n in names:
        o = find_object(scene, n)
        if o is not None:
            boxes.append((n, tuple(int(v) for v in o.bbox)))
    return numpy_to_image_msg(draw_annotation(image, boxes, text, confidence, located), "rgb8", header)
