"""A ``SpatialQuery`` answer as a response and as an annotated image.

``fill_answer`` copies a model's ``QueryAnswer`` into the service response; ``located_subject``
names the object whose location the answer carries; ``annotated_image`` draws the named objects'
boxes (from the scene state, solid), the model's own predicted boxes and points (dashed, with
their confidence), the answer text and its confidence (the ``~/annotated`` topic).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from rls3_ros.core.image_codec import numpy_to_image_msg
from rls3_ros.core.scene import SceneState
from rls3_ros.ros.annotate import draw_annotation, find_object
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
