"""loop.adapter_scale: the fine-tuned adapter averaged with the base is base + f x delta, still a LoRA adapter
of the same base that the query server's checks accept."""

import pytest
import torch

from rls3_ros.loop.adapter_average import average_with_base, lora_b_weights
from rls3_ros.loop.config import LoopConfig
from rls3_ros.vlm.adapter_trust import AdapterPolicy, base_identity, load_checked
from rls3_ros.vlm.answers import load_model


def _delta(vlm, x):
    """What the adapter adds to the model's first LoRA layer's output for input ``x``."""
    from peft.tuners.lora import LoraLayer

    layer = next(m for m in vlm.host.model.modules() if isinstance(m, LoraLayer))
    with torch.no_grad():
        return layer(x) - layer.base_layer(x)


def test_averaging_scales_what_the_adapter_adds_and_the_result_loads_in_the_query_server(tmp_path):
    vlm = load_model("grounded:serving")
    with pytest.raises(ValueError):
        average_with_base(vlm, 0.5)  # no adapter yet
    vlm.ensure_adapter()
    torch.manual_seed(1)
    with torch.no_grad():
        for w in lora_b_weights(vlm.host.model):
            w.normal_(0.0, 0.1)  # as a fine-tune leaves it: B != 0
    from peft.tuners.lora import LoraLayer

    n_in = next(m for m in vlm.host.model.modules() if isinstance(m, LoraLayer)).in_features
    x = torch.randn(4, n_in)
    before = _delta(vlm, x)
    assert before.abs().max() > 0
    assert average_with_base(vlm, 0.5) > 0
    after = _delta(vlm, x)
    assert torch.allclose(after, 0.5 * before, atol=1e-6)
    saved = vlm.save_adapter(str(tmp_path / "iter_001"))
    served = load_model("grounded:serving")
    load_checked(served, saved, AdapterPolicy.for_roots([str(tmp_path)]), base_identity(served))
    again = _delta(served, x)
    assert torch.allclose(again, after, atol=1e-6)


def test_the_factor_is_checked():
    vlm = load_model("grounded:serving")
    vlm.ensure_adapter()
    for bad in (0.0, 1.5, -1.0):
        with pytest.raises(ValueError):
            average_with_base(vlm, bad)
    with pytest.raises(ValueError):
        LoopConfig(adapter_scale=0.0)
    assert LoopConfig().adapter_scale == 1.0  # the default trains and serves the adapter as fitted
