"""The grounded model's configuration (``config.json`` beside the weights) and file names."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Dict, List

from rls3_ros.vlm.vocabulary import default_vocabulary

FAMILY = "grounded"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


@dataclass
class GroundedConfig:
    image_size: int = 160
    image_stage: str = "stride16"
    feat_channels: int = 112
    grid: int = 10
    dim: int = 64  # attention / feature width
    word_dim: int = 48
    hidden: int = 128
    hash_buckets: int = 64
    vocabulary: List[str] = field(default_factory=default_vocabulary)
    # box head width (0 = no box head: the located box is the locator's fixed-size box around the
    # attention peak, as every model built before the box head)
    box_hidden: int = 0
    # the relation head also sees both objects' predicted boxes (needs a box head; False = the head
    # sees only the attention centroids and spreads, as every model built before it)
    relation_boxes: bool = False

    def __post_init__(self) -> None:
        if self.relation_boxes and self.box_hidden <= 0:
            raise ValueError("relation_boxes needs a box head (box_hidden > 0)")
        # grid and channels are what the frozen encoder gives at this stage and image size ("same"
        # padding): never free ("stride8+16": stride 8 with the stride-16 map upsampled beside it)
        from rls3_ros.vlm.efficientnet_lite import FEATURE_CHANNELS, STRIDES

        stride = STRIDES.get(self.image_stage, 16)
        self.grid = -(-int(self.image_size) // stride)
        self.feat_channels = FEATURE_CHANNELS.get(self.image_stage, self.feat_channels)

    def to_json(self) -> str:
        return json.dumps(dict(asdict(self), family=FAMILY), indent=1)

    @staticmethod
    def from_dict(d: Dict) -> "GroundedConfig":
        d = {k: v for k, v in d.items() if k in GroundedConfig.__dataclass_fields__}
        return GroundedConfig(**d)

