"""Named grounded models and the loader ``py:rls3_ros.vlm.grounded:load[:<model dir>]``."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

from rls3_ros.vlm.grounded.config import CONFIG
from rls3_ros.vlm.grounded.persistence import load_grounded_dir, load_locator_settings, load_point_source
from rls3_ros.vlm.grounded.training import default_lora
from rls3_ros.vlm.grounded.vlm import GroundedVLM
from rls3_ros.vlm.model_dirs import default_dirs

# Named grounded models: ``grounded:<name>`` / ``load("<name>")`` -> the model directory name.
# "serving" is the base trained on every relation that the query server answers with
# (models/grounded_serving/README.md), and what the RLS3 loop fine-tunes by default; the plain
# "grounded" base is the deliberately weak one of the learning benchmark's from-scratch regime
# (models/grounded/README.md).
NAMED_MODELS = {"serving": "grounded_serving"}
SERVING_BUILD = ("rls3 pretrain --out models/grounded_serving --seed 0 --n-train 19200 --n-test 300 --rare-keep 1.0 "
                 "--steps 8000 --stage stride8+16 --box-hidden 64 --force; "
                 "python -m rls3_ros.vlm.locator_fit models/grounded_serving --n 600")


def load(arg: str = "", lora: Optional[Dict] = None, **options) -> GroundedVLM:
    """Loader for ``py:rls3_ros.vlm.grounded:load[:<model dir>]``.

    ``arg``: model directory ("" = first of ``model_dirs.default_dirs("grounded")`` holding a model), or a
    name of ``NAMED_MODELS`` ("serving": the first of ``default_dirs("grounded_serving")`` holding one).
    ``lora``: LoRA options (r, alpha, dropout, target_modules, learning_rate, batch_size).
    Other options: ``grounding_weight``, ``candidate_weight``, ``box_weight``, ``seed``.
    """
    if arg and arg not in NAMED_MODELS:
        directory = Path(arg)
    else:
        name = NAMED_MODELS.get(arg, "grounded")
        found = [d for d in default_dirs(name) if (d / CONFIG).is_file()]
        if not found:
            how = SERVING_BUILD if arg else "rls3 pretrain (--model grounded)"
            raise FileNotFoundError(f"no grounded {arg or 'base'} model in {[str(d) for d in default_dirs(name)]}; "
                                    f"build one with: {how}")
        directory = found[0]
    import peft  # noqa: F401  (now, not at the first adapter swap: the import takes seconds)

    model = load_grounded_dir(directory)
    known = {k: options[k] for k in ("grounding_weight", "candidate_weight", "box_weight", "seed") if k in options}
    lo = default_lora(**(lora or {}))
    return GroundedVLM(model, lora=lo, base_spec=f"py:rls3_ros.vlm.grounded:load:{directory}",
                       locator_settings=load_locator_settings(directory), point_source=load_point_source(directory),
                       **known)
