"""Grounded spatial VLM: find A and B in the image by their descriptions, then classify the relation.

Why this model exists: the embedded fusion model (``embedded.py`` + ``contrastive.py``) scores
(image, caption) pairs end-to-end and, in a few CPU minutes, learns which objects go with which
captions but not *where* the subject and the reference are; on held-out scenes it is at or below
chance (models/README.md). This model makes the binding explicit:

1. frozen ImageNet EfficientNet-Lite0 stride-16 features (160 px -> 10 x 10 grid, 112 channels,
   cached per image by content hash) + a learned 2D position embedding;
2. each object description ("red mug") -> bag of word embeddings (explicit vocabulary of the
   simulator's colours and category nouns, hashed buckets for other words) -> ``q_proj`` query;
   dot with ``k_proj`` grid keys -> softmax attention over the grid -> attended ``v_proj``
   feature, expected (x, y) position (soft-argmax) and spread (size proxy) for A and for B.
   When the simulator's 2D boxes are known (pretraining, fine-tuning on RL samples) the
   attention map is also supervised towards the object's box cells;
3. relation head ``fc1`` -> ``fc2`` -> ``out_proj`` on [feat_A, feat_B, pos_A, pos_B,
   pos_B - pos_A, spread_A, spread_B] -> independent softmaxes over three axes:
   vertical {none, above, below, on, under}, depth {none, in front, behind},
   lateral {none, left, right}. log p(term set | image, A, B) = sum of the axis log-probs.

4. optional box head (``config.box_hidden`` > 0; 0 = none, every model built before it):
   ``box_fc`` -> ``box_out`` on [attended feature, position, spread, soft-argmax and mass of the
   3 x 3 cells around the attention peak] -> the object's box (centre = the local peak + an offset
   in cells, size = a factor on a prior size), trained with L1 + (1 - GIoU) against the simulator's
   2D boxes (``box_weight``). ``locate`` returns that box; without a head, the locator's
   fixed-size box around the attention peak (``rls3_ros.vlm.grounding``).

The feature grid is the config's ``image_stage``: "stride16" (10 x 10 at 160 px), "stride8" (20 x 20)
or "stride8+16" (20 x 20: stride 8 with the stride-16 map upsampled beside it, 152 channels).

SpatialVLM semantics (``score``, ``where``, ``check``, ``what``): see ``vlm.py``. LoRA (peft) on
``q_proj``, ``k_proj``, ``v_proj``, ``fc1``, ``fc2``, ``out_proj``; adapters saved atomically in standard
peft format (``PeftModel.from_pretrained(GroundedRelationModel(...), dir)`` loads them). The box head is
not a LoRA target: what an adapter is for (relations the base gets wrong, judged by the promotion
gate on relations alone) does not involve box sizes, a few hundred loop samples carry no box
information that ~10,000 pretraining renders did not, and the adapters' target set stays the same
for every base; the box loss still takes part in fine-tuning, through the adapted attention.

Use: ``py:rls3_ros.vlm.grounded:load`` (optionally ``:<model dir>``), e.g.
``rls3 train --set run.vlm=py:rls3_ros.vlm.grounded:load``. Build the base with
``python -m rls3_ros.vlm.grounded_pretrain`` (see ``grounded_pretrain.py``).

Layout (one idea per module, as peft lays out a method):

- ``config.py``: ``GroundedConfig`` (``config.json``) and the file names;
- ``axes.py``: the relation head's 11-column output layout (``term_indices``, ``axis_log_probs``);
- ``model.py``: ``GroundedRelationModel``, the torch network;
- ``segments.py``: softmax within each relation's candidate set, batched;
- ``vlm.py``: ``GroundedVLM``, the SpatialVLM wrapper (scoring, queries, grounding, adapters);
- ``training.py``: its training half (items, batch loss, optimiser loop, ``default_lora``);
- ``persistence.py``: ``save_model`` / ``load_grounded_dir`` and ``base_fingerprint``;
- ``loader.py``: named models and ``load``, the ``py:rls3_ros.vlm.grounded:load`` entry.
"""

from rls3_ros.vlm.grounded.axes import (AXES, AXIS_SLICES, DEPTH, LATERAL, N_OUT, TERM_AXIS, VERTICAL,
                                        axis_log_probs, term_indices, term_of_column)
from rls3_ros.vlm.grounded.config import CONFIG, FAMILY, WEIGHTS, GroundedConfig
from rls3_ros.vlm.grounded.loader import NAMED_MODELS, SERVING_BUILD, load
from rls3_ros.vlm.grounded.model import DENSE_GROUND_MAX, GroundedRelationModel
from rls3_ros.vlm.grounded.persistence import base_fingerprint, load_grounded_dir, save_model
from rls3_ros.vlm.grounded.segments import padded_segments, segment_log_softmax
from rls3_ros.vlm.grounded.training import GroundedTraining, TrainItem, box_target, default_lora
from rls3_ros.vlm.grounded.vlm import REFIT_HINT, UNPARSABLE, GroundedVLM
from rls3_ros.vlm.lora import ADAPTER_META

__all__ = [
    "ADAPTER_META", "AXES", "AXIS_SLICES", "CONFIG", "DENSE_GROUND_MAX", "DEPTH", "FAMILY", "LATERAL", "NAMED_MODELS",
    "N_OUT", "REFIT_HINT", "SERVING_BUILD", "TERM_AXIS", "UNPARSABLE", "VERTICAL", "WEIGHTS", "GroundedConfig",
    "GroundedRelationModel", "GroundedTraining", "GroundedVLM", "TrainItem", "axis_log_probs", "base_fingerprint",
    "box_target", "default_lora", "load", "load_grounded_dir", "padded_segments", "save_model", "segment_log_softmax",
    "term_indices", "term_of_column",
]
