"""``rls3 query``: one spatial query from the shell.

    rls3 query --image x.png --subject mug --reference lamp               # where is the mug?
    rls3 query --image x.png --subject mug --relation left --reference lamp   # is it left of?
    rls3 query --image x.png --relation left --reference lamp --candidates mug book   # what is?
    ... [--model embedded] [--adapter DIR | --run runs/<ts>] [--json]
    rls3 query --via-ros [--service /spatial_query/query] ...             # ask a running node

Direct mode (default) loads the model in this process (no ROS needed) and answers exactly
as the ``spatial_query`` node would (same validation and phrasing). ``--via-ros`` sends the
request to a running ``spatial_query`` node instead (``--image`` optional there: without it
the node uses the latest camera frame).

Exit codes: 0 answered, 1 the query was refused (reason printed), 2 usage / input error.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from typing import List, Optional

import numpy as np

from rls3_ros.vlm.answers import QUERY_TYPES, QueryAnswer, QueryRequest


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rls3 query", description="Ask the spatial VLM about two objects in an image.")
    p.add_argument("--image", help="image file (PNG/JPEG); required unless --via-ros (then: latest camera frame)")
    p.add_argument("--subject", default="", help="object A, e.g. 'mug' (where, check)")
    p.add_argument("--reference", required=True, help="object B, e.g. 'lamp'")
    p.add_argument("--relation", default="", help="check/what: e.g. 'left', 'in front', 'above and behind'")
    p.add_argument("--candidates", nargs="*", default=[], help="what: candidate objects")
    p.add_argument("--type", dest="query_type", choices=QUERY_TYPES,
                   help="query type (default: where; check with --relation and --subject; what with --relation only)")
    p.add_argument("--model", default="grounded:serving",
                   help="model spec (direct mode), default 'grounded:serving' (the query server's model)")
    p.add_argument("--adapter", default="", help="LoRA adapter directory (direct mode)")
    p.add_argument("--run", default="", help="a training run directory: answer with the adapter it serves (the last "
                                              "one that passed its promotion gate; none: its base) (direct mode)")
    p.add_argument("--via-ros", action="store_true", help="ask a running spatial_query node")
    p.add_argument("--service", default="/spatial_query/query", help="query service (--via-ros)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the node (--via-ros)")
    p.add_argument("--json", action="store_true", help="print the answer as JSON")
    return p


def read_image(path: str) -> np.ndarray:
    from PIL import Image as PILImage

    with PILImage.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def _query_type(a: argparse.Namespace) -> str:
    if a.query_type:
        return a.query_type
    if a.relation:
        return "check" if a.subject else "what"
    return "where"


def answer_direct(a: argparse.Namespace, req: QueryRequest, image: np.ndarray) -> QueryAnswer:
    from rls3_ros.vlm.answers import answer_query, load_model

    try:
        if a.run:
            from rls3_ros.loop.serving import served_adapter

            a.adapter = served_adapter(a.run)
        model = load_model(a.model, a.adapter)
    except Exception as e:  # noqa: BLE001 - shown as one line
        return QueryAnswer(success=False, message=f"cannot load model {a.model!r}"
                           f"{' with adapter ' + repr(a.adapter) if a.adapter else ''}: {type(e).__name__}: {e}")
    return answer_query(model, image, req)


def answer_via_ros(a: argparse.Namespace, req: QueryRequest, image: Optional[np.ndarray]) -> QueryAnswer:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from rls3_ros.ros.client import SpatialQueryClient, SpatialQueryError

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("rls3_query_cli", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    try:
        client = SpatialQueryClient(node, a.service)
        r = client.call(client.make_request(req.query_type, req.subject, req.reference, req.relation,
                                            req.candidates, image), timeout=a.timeout)
        return QueryAnswer(
            success=r.success, message=r.message, answer=r.answer, terms=list(r.terms), confidence=float(r.confidence),
            term_probabilities={n: float(p) for n, p in zip(r.term_names, r.term_probabilities)}, holds=bool(r.holds),
            ranked=[(c, float(s)) for c, s in zip(r.ranked_candidates, r.candidate_scores)], adapter=r.adapter,
        )
    except SpatialQueryError as e:
        return QueryAnswer(success=False, message=str(e))
    finally:
        executor.shutdown(timeout_sec=2.0)
        node.destroy_node()
        context.try_shutdown()
        spin.join(timeout=5.0)


def format_answer(req: QueryRequest, ans: QueryAnswer) -> str:
    if not ans.success:
        return f"refused: {ans.message}"
    lines = [ans.answer, f"confidence: {ans.confidence:.3f}   adapter: {ans.adapter or '(base model)'}"]
    if req.query_type == "where":
        lines.append("term probabilities:")
        for t, p in sorted(ans.term_probabilities.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {t:<10} {p:.3f}{'  *' if t in ans.terms else ''}")
    elif req.query_type == "check":
        lines.append(f"holds: {'yes' if ans.holds else 'no'}")
    else:
        lines.append("ranked candidates:")
        for c, s in ans.ranked:
            lines.append(f"  {c:<20} {s:.3f}")
    return "\n".join(lines)


def cli_query(argv: List[str]) -> int:
    parser = build_parser()
    try:
        a = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2)
        return int(e.code or 0)
    req = QueryRequest(_query_type(a), a.subject, a.reference, a.relation, list(a.candidates))
    image = None
    if a.image:
        try:
            image = read_image(a.image)
        except Exception as e:  # noqa: BLE001 - unreadable file: usage error
            print(f"rls3 query: cannot read image {a.image!r}: {e}", file=sys.stderr)
            return 2
    elif not a.via_ros:
        print("rls3 query: --image is required (or --via-ros to use the node's camera frame)", file=sys.stderr)
        return 2
    ans = answer_via_ros(a, req, image) if a.via_ros else answer_direct(a, req, image)
    if a.json:
        print(json.dumps({"query_type": req.query_type, "success": ans.success, "message": ans.message,
                          "answer": ans.answer, "terms": ans.terms, "confidence": ans.confidence,
                          "term_probabilities": ans.term_probabilities, "holds": ans.holds,
                          "ranked": ans.ranked, "adapter": ans.adapter}, indent=2))
    else:
        print(format_answer(req, ans))
    return 0 if ans.success else 1


if __name__ == "__main__":
    raise SystemExit(cli_query(sys.argv[1:]))
