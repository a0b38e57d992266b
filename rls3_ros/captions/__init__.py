"""Caption oracle (paper section 2): spatial terms, captions, pairs, negatives, datasets.

Pure Python (no ROS). Main entry points::

    from rls3_ros.captions import CaptionOracle, OracleConfig, parse_caption
    rels = CaptionOracle().caption_scene(scene)   # list[SpatialRelation]
"""

from rls3_ros.captions.negatives import hard_negatives, relation_candidates
from rls3_ros.captions.oracle import CaptionError, CaptionOracle, OracleConfig
from rls3_ros.captions.parse import CaptionParseError, extract_terms, parse_caption, try_parse_caption
from rls3_ros.captions.terms import TERMS, make_caption

__all__ = [
    "CaptionError",
    "CaptionOracle",
    "CaptionParseError",
    "OracleConfig",
    "TERMS",
    "extract_terms",
    "hard_negatives",
    "make_caption",
    "parse_caption",
    "relation_candidates",
    "try_parse_caption",
]
