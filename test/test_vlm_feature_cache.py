"""The grounded model's frozen-encoder feature cache: keyed by image content, bounded."""

from __future__ import annotations

import numpy as np
import torch

from rls3_ros.vlm.feature_cache import FeatureCache, image_key


def _image(seed: int, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_image_key_follows_content_shape_and_dtype_not_memory_layout():
    a = _image(0)
    assert image_key(a) == image_key(a.copy())
    assert image_key(a[:, ::-1]) == image_key(np.ascontiguousarray(a[:, ::-1]))  # a strided view: same pixels
    b = a.copy()
    b[5, 7, 1] ^= 1  # one bit of one pixel
    assert image_key(b) != image_key(a)
    assert image_key(a.reshape(32, 96)) != image_key(a)
    assert image_key(a.view(np.int8)) != image_key(a)


def test_cache_returns_the_encoders_features_and_evicts_the_least_recently_used():
    cache = FeatureCache(32, "stride16", capacity=2)
    ims = [_image(i) for i in range(3)]
    first = cache(ims[:2])
    assert torch.equal(cache([ims[1].copy(), ims[0]]), first.flip(0))  # hits, by content
    with torch.inference_mode():
        from rls3_ros.vlm.feature_cache import encoder_input

        direct = cache.net.features(encoder_input(ims[:1], 32), "stride16").half()
    assert torch.allclose(first[0].float(), direct[0].float(), atol=2e-2)  # batch of 2 vs 1: float rounding
    cache(ims[2:])  # evicts image 1 (image 0 was used more recently)
    assert len(cache._cache) == 2 and image_key(ims[1]) not in cache._cache and image_key(ims[0]) in cache._cache


def test_folded_encoder_is_the_pretrained_network_up_to_float_rounding():
    from rls3_ros.vlm import efficientnet_lite as E
    from rls3_ros.vlm.feature_cache import encoder_input

    net = E.load_pretrained()
    folded = E.fold_batch_norms(net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # the original is left as it was
    x = encoder_input([_image(i, 64) for i in range(3)], 64)
    with torch.inference_mode():
        for stage in ("stride8", "stride16", "stride32", "head"):
            a, b = net.features(x, stage), folded.features(x, stage)
            assert a.shape == b.shape
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-3 * float(a.abs().max())), stage


def test_same_conv_is_tensorflow_same_padding_bitwise():
    """Padding inside the convolution (symmetric cases) or by ``F.pad`` (asymmetric ones) gives
    bitwise what zero-padding to TF "SAME" and a valid convolution give, and its output size."""
    import math

    import torch.nn.functional as F

    from rls3_ros.vlm.efficientnet_lite import SameConv2d

    torch.manual_seed(0)
    for k, stride, groups, size in [(3, 1, 1, 20), (5, 1, 8, 17), (3, 2, 1, 20), (5, 2, 8, 21), (1, 1, 1, 9), (3, 2, 8, 160)]:
        conv = SameConv2d(8, 8, k, stride=stride, groups=groups, bias=True)
        x = torch.randn(2, 8, size, size + 3)
        ph = max((math.ceil(size / stride) - 1) * stride + k - size, 0)
        pw = max((math.ceil((size + 3) / stride) - 1) * stride + k - size - 3, 0)
        ref = F.conv2d(F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2]), conv.weight, conv.bias, stride, 0, 1, groups)
        with torch.no_grad():
            for _ in range(2):  # the second call uses the padding kept from the first
                out = conv(x)
                assert out.shape[-2:] == (math.ceil(size / stride), math.ceil((size + 3) / stride))
                assert torch.equal(out, ref), (k, stride, size)
