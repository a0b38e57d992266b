"""Which fine-tuning recipe turns loop data into gains on the served model? (issue 29, item 1;
docs/learning.md, "Recipe search"). Scratch data and results under ``runs/h3/`` (git-ignored).

    # the data, once: the main job's fixed sets (cached as the loop caches them), a larger replay
    # pool (800 scenes), 3,000 loop-like samples (random actions through the loop's env, run seed 7),
    # the dev split (500 balanced scenes, seeds from 1.15e9) and the pre-training corpus's first 4,800
    .venv/bin/python tools/served_recipe_search.py data sets|replay800|pool|dev|corpus
    # one recipe (JSON: name, n, seed, r, alpha, lr, spn, replay, schedule loop|once|control|corpus,
    # batch, replay_scenes, steps, n_corpus, n_replay, lora_corpus, warmup, wd, scales, base = the model
    # spec to start from, default grounded:serving): one line per
    # adapter scale on stdout, the full record appended to runs/h3/results.jsonl
    .venv/bin/python tools/served_recipe_search.py run '{"name": "x", "n": 1000, "schedule": "once"}'

Every recipe starts from ``grounded:serving``; differences are paired against it on the same
relations (``served_gain.paired_difference``), where-exact as the query node answers
(``served_gain.where_exact_answers``). Choose on val and dev; test and tail are reported.
"""
import json
import os
import pickle
import sys
import time

import numpy as np
import torch

torch.set_num_threads(1)
OUT = "runs/h3"


def _cfg(replay_scenes=200):
    from rls3_ros.loop.config import as_train_config
    from rls3_ros.loop.config_files import load_train_config

    return as_train_config(load_train_config(sets=[f"eval.replay_scenes={replay_scenes}"]))


def _source(cfg):
    from rls3_ros.loop.runner import BackendSource, backend_params
    from rls3_ros.sim.factory import make_backend

    return BackendSource(make_backend(cfg.run.backend, **backend_params(cfg.run, 0)))


def data(what):
    os.makedirs(OUT, exist_ok=True)
    from rls3_ros.loop.runner import fixed_sets, run_captioner

    cfg = _cfg(800 if what == "replay800" else 200)
    if what in ("sets", "replay800"):
        src = _source(cfg)
        splits, replay = fixed_sets(cfg, src, list(src.scene_types), print)
        print({k: len(v) for k, v in splits.items()}, "replay", len(replay))
    elif what == "pool":
        from rls3_ros.loop.env import RLS3Env

        src = _source(cfg)
        n, seed = 3000, 7
        env = RLS3Env.from_config(cfg.env, src, run_captioner(seed), None, T=cfg.loop.T, T0=cfg.loop.T0, seed=seed,
                                  scene_types=list(src.scene_types), run_id=f"h3s{seed}")
        rng = np.random.default_rng([seed, 99])
        got, renders = [], 0
        while len(got) < n:
            env.reset()
            done = False
            while not done:
                _, _, done, _, info = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
                renders += 1
            got.extend(info["episode_record"].samples)
        pickle.dump(got, open(f"{OUT}/pool7.pkl", "wb"))
        print(len(got), "samples from", renders, "renders")
    elif what == "dev":
        from rls3_ros.captions.oracle import CaptionOracle
        from rls3_ros.loop.datasets import balance_relations, generate_samples, term_counts

        src, o = _source(cfg), CaptionOracle()
        s = generate_samples(src, lambda sc: o.caption_scene(sc), "val", 500, 4, list(src.scene_types),
                             seed_offset=50_000_000)
        d = balance_relations(s, 150)
        pickle.dump(d, open(f"{OUT}/dev.pkl", "wb"))
        print(len(d), sum(len(x.relations) for x in d), term_counts(d))
    elif what == "corpus":
        from rls3_ros.vlm.pretrain import render_corpus

        pickle.dump(render_corpus(4800, 0, 160), open(f"{OUT}/corpus4800.pkl", "wb"))


def run(spec):
    from rls3_ros.loop.runner import fixed_sets
    from rls3_ros.loop.served_gain import paired_difference, where_exact_answers
    from rls3_ros.vlm.answers import load_model

    R = dict(name="x", n=300, seed=0, r=8, alpha=16, lr=1e-3, spn=2.0, replay=0.8, schedule="loop", batch=36,
             pool="runs/h3/pool7.pkl", targets=None, replay_scenes=200, wd=0.01, warmup=5, dev=1,
             base="grounded:serving")
    R.update(json.loads(spec))
    cfg = _cfg(R["replay_scenes"])
    src = _source(cfg)
    splits, replay = fixed_sets(cfg, src, list(src.scene_types), lambda m: None)
    src.close() if hasattr(src, "close") else None
    if R["dev"]:
        splits["dev"] = pickle.load(open("runs/h3/dev.pkl", "rb"))
    pool = pickle.load(open(R["pool"], "rb"))
    assert len(pool) >= R["n"], len(pool)
    loop = pool[: R["n"]]
    lora = {"learning_rate": R["lr"], "r": R["r"], "alpha": R["alpha"]}
    if R["targets"]:
        lora["target_modules"] = R["targets"]
    vlm = load_model(R["base"], options={"lora": lora, "seed": R["seed"]})
    vlm.features.capacity = 30000
    names = [k for k in ("val", "dev", "test", "tail") if splits.get(k)]
    base_ev = {k: vlm.evaluate(splits[k]) for k in names}
    base = {k: e.correct for k, e in base_ev.items()}
    vlm_base_per_term = base_ev["dev"].per_term if "dev" in base_ev else {}
    base_w = {k: where_exact_answers(vlm, splits[k]) for k in ("dev", "test") if k in splits}
    rng = np.random.default_rng([R["seed"], 7])
    t0 = time.time()
    steps_total = 0

    def train(samples, steps):
        nonlocal steps_total
        pool_ = list(samples)
        n_rep = 0
        if R["replay"] > 0:
            n_rep = min(len(replay), int(round(R["replay"] / (1 - R["replay"]) * len(pool_))))
        rep = [replay[i] for i in rng.choice(len(replay), n_rep, replace=False)] if n_rep else []
        feats = vlm.features([s.image for s in pool_ + rep]).float()
        with vlm.lock:
            vlm.ensure_adapter()
            items = vlm.prepare(pool_ + rep)
            vlm.train_steps(feats, items, steps, vlm.host.trainable_parameters(), lr=R["lr"], batch_size=32,
                            warmup=R["warmup"], weight_decay=R["wd"])
        steps_total += steps


    if R["schedule"] == "loop":  # the loop's cumulative schedule: after every batch, all so far, steps = spn x batch
        for i in range(0, len(loop), R["batch"]):
            train(loop[: i + R["batch"]], int(round(R["spn"] * len(loop[i: i + R["batch"]]))))
    elif R["schedule"] == "control":  # the same steps on replay only (no loop data): the cost of fine-tuning itself
        rep_only = [replay[i] for i in rng.choice(len(replay), min(len(replay), R["n_replay"]), replace=False)]
        R["replay"] = 0.0
        train(rep_only, int(round(R["spn"] * len(loop))))
    elif R["schedule"] == "corpus":  # continuation of pre-training: all parameters, the pre-training corpus + loop data
        corpus = pickle.load(open("runs/h3/corpus4800.pkl", "rb"))[: R["n_corpus"]] if R["n_corpus"] else []
        pool_all = corpus + list(loop) + list(replay)
        feats = vlm.features([s.image for s in pool_all]).float()
        items = vlm.prepare(pool_all)
        if R.get("lora_corpus"):
            vlm.ensure_adapter()
            params = vlm.host.trainable_parameters()
        else:
            params = [p for p in vlm.base.parameters()]
        for p_ in params:
            p_.requires_grad_(True)
        vlm.train_steps(feats, items, R["steps"], params, lr=R["lr"], batch_size=32, warmup=R["warmup"], weight_decay=R["wd"])
        if not R.get("lora_corpus"):
            for p_ in params:
                p_.requires_grad_(False)
        steps_total = R["steps"]
        R["scales"] = [1.0, 0.5] if R.get("lora_corpus") else [1.0]
    else:  # one fine-tune on everything
        train(loop, int(round(R["spn"] * len(loop))))
    ft = time.time() - t0
    out = dict(recipe=R, steps=steps_total, fine_tune_s=round(ft, 1), replay_pool=len(replay))
    lb = {n: m.weight.detach().clone() for n, m in vlm.host.model.named_modules() if n.endswith("lora_B.default")}

    def fmt(d):
        return f"{100 * d['gain']:+.1f} [{100 * d['low']:+.1f},{100 * d['high']:+.1f}]"
    for a in R.get("scales", [1.0, 0.5]):
        with torch.no_grad():
            for n, m in vlm.host.model.named_modules():
                if n in lb:
                    m.weight.copy_(lb[n] * a)
        vlm._att_memo = None
        o = {}
        for k in names:
            ev = vlm.evaluate(splits[k])
            o[k] = paired_difference(base[k], ev.correct)
            if k == "dev":
                o["dev_per_term"] = ev.per_term
        for k in base_w:
            o[k + "_where"] = paired_difference(base_w[k], where_exact_answers(vlm, splits[k]))
        out[f"scale{a}"] = o
        print(R["name"], R["n"], "scale", a, "steps", steps_total, f"{ft:.0f}s",
              " ".join(f"{k}:{fmt(o[k])}" for k in o if isinstance(o[k], dict) and "gain" in o[k]), flush=True)
    if "dev" in splits:
        out["dev_base_per_term"] = vlm_base_per_term
    with open("runs/h3/results.jsonl", "a") as f:
        f.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("data", "run"):
        sys.exit(__doc__)
    data(sys.argv[2]) if sys.argv[1] == "data" else run(sys.argv[2])
