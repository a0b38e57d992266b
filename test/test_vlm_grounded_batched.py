"""The grounded VLM's batched training loss and scoring equal their per-relation definitions.

``GroundedVLM.batch_loss`` scores every candidate and every grounding target of a batch in one op,
and ``score`` takes one log-softmax over all relations' padded candidates; ``ground`` scores few
images densely. The references here are the definitions written one relation at a time (what the
model computed before it was batched). Real MuJoCo renders, real EfficientNet features, a real
peft adapter."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rls3_ros.captions import terms as T
from rls3_ros.captions.negatives import relation_candidates
from rls3_ros.vlm import grounded as G
from rls3_ros.vlm.grounded_pretrain import _render


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    samples = _render(8, seed=5, image_size=96, backend="mujoco", moves=4, desc="test renders")
    torch.manual_seed(0)
    vlm = G.GroundedVLM(G.GroundedRelationModel(G.GroundedConfig(image_size=96)), seed=0)
    vlm.ensure_adapter()
    with torch.no_grad():  # an adapter that is not the identity: LoRA B starts at zero
        for n, p in vlm.base.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    feats = vlm.features([s.image for s in samples]).float()
    return samples, vlm, feats, vlm.prepare(samples)


def reference_loss(vlm, feats, batch):
    """Per-item definition: term CE of (A, B) and (B, A), candidate CE, box-grounding CE."""
    term, cand, ground = [], [], []
    for it in batch:
        img = torch.tensor([it.img])

        def logp(s, r):
            lg, att_s, att_r = vlm.base(feats, img, [s], [r])
            return G.axis_log_probs(lg)[0], att_s[0], att_r[0]

        lp_ab, att_a, att_b = logp(it.subj, it.ref)
        lp_ba, _, _ = logp(it.ref, it.subj)
        inv = G.term_indices(T.inverse_terms([G.term_of_column(c) for c in it.true_cols if G.term_of_column(c)]))
        term.append(-(lp_ab[list(it.true_cols)].sum() + lp_ba[list(inv)].sum()) / 2)
        scores = torch.stack([logp(c[0], c[2])[0][list(G.term_indices(c[1]))].sum() for c in it.cands])
        cand.append(-torch.log_softmax(scores, 0)[0])
        for att, tgt in ((att_a, it.tgt_s), (att_b, it.tgt_r)):
            if tgt is not None:
                ground.append(-(torch.from_numpy(tgt) * torch.log_softmax(att, 0)).sum())
    loss = torch.stack(term).mean() + vlm.candidate_weight * torch.stack(cand).mean()
    return loss + vlm.grounding_weight * torch.stack(ground).mean()


def grads(vlm, loss):
    params = vlm.host.trainable_parameters()
    return torch.autograd.grad(loss, params, allow_unused=True)


def test_batch_loss_and_its_gradients_equal_the_per_item_definition(setup):
    samples, vlm, feats, items = setup
    assert len(items) >= 12 and any(len(it.cands) != len(items[0].cands) for it in items)  # ragged candidates
    batch = items[1:13:2] + items[:3]  # not every image, images out of order
    vlm.base.train()
    try:
        got, want = vlm.batch_loss(feats, batch), reference_loss(vlm, feats, batch)
        assert math.isclose(float(got.detach()), float(want.detach()), rel_tol=1e-5)
        for g, w in zip(grads(vlm, got), grads(vlm, reference_loss(vlm, feats, batch))):
            assert (g is None) == (w is None)
            if g is not None:
                assert torch.allclose(g, w, atol=1e-5, rtol=1e-4)
    finally:
        vlm.base.eval()


def test_score_equals_one_relation_at_a_time(setup):
    samples, vlm, feats, _ = setup
    batched = vlm.score(samples)
    one = [sc for s in samples for r in s.relations
           for sc in vlm.score([type(s)(sample_id=s.sample_id, image=s.image, scene=s.scene, relations=[r])])]
    assert [(a.sample_id, a.caption, a.predicted, a.correct) for a in batched] == \
        [(b.sample_id, b.caption, b.predicted, b.correct) for b in one]
    assert np.allclose([a.loss for a in batched], [b.loss for b in one], atol=1e-5)
    assert np.allclose([a.confidence for a in batched], [b.confidence for b in one], atol=1e-5)
    # and the definition itself: cross-entropy of the true caption among the candidates
    s, r = samples[0], samples[0].relations[0]
    caps = relation_candidates(r)
    lp = torch.stack([torch.log(torch.tensor(np.prod([vlm.axis_probs(s.image, [(p[0], p[2])])[0][c]
                                                        for c in G.term_indices(p[1])])))
                      for p in map(vlm.parse, caps)])
    assert math.isclose(batched[0].loss, float(-torch.log_softmax(lp, 0)[0]), rel_tol=1e-4)
    assert batched[0].predicted == caps[int(lp.argmax())]


def test_dense_grounding_equals_the_gathered_one(setup, monkeypatch):
    samples, vlm, feats, items = setup
    with torch.no_grad():
        dense = vlm.batch_loss(feats, items[:10])
        monkeypatch.setattr(G, "DENSE_GROUND_MAX", 0)
        gathered = vlm.batch_loss(feats, items[:10])
    assert math.isclose(float(dense), float(gathered), rel_tol=1e-5)
