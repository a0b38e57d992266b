"""Fuzz the adapter check ``spatial_query`` and ``vlm_trainer`` run on every adapter they load.

``N`` (200) adapter directories are generated from a fixed seed, each a real adapter of the tiny
test model with one to three mutations: random, truncated, non-UTF-8, deeply nested or oversized
JSON; wrong types and huge or non-finite numbers in ``adapter_config.json`` (rank, alpha,
dropout, patterns); regex or unknown target modules; code- or work-selecting peft options;
unknown keys; safetensors files that are empty, truncated, random, with impossible header
lengths, non-LoRA tensors, bad offsets, shapes or dtypes, or tensors that do not fit the model;
pickled weights only; ``rls3_adapter.json`` missing, malformed, of another base or family;
files that are FIFOs, directories or symlinks. A few generated directories carry only harmless
changes (an extra file, keys reordered, a float alpha ...) and must load.

Each directory goes through the nodes' own path: ``adapter_trust.stage_adapter`` (roots, files,
limits, base) and ``load_staged`` into a real model. Outcomes are counted: refused with a reason
(``AdapterRefused``, one line), loaded, crashed (any other exception). Asserted: no crash,
every directory with a harmful mutation refused, every harmless one loaded, and the model still
answers after all of them. Counts go to ``results/fuzz_counts.json`` under
``"spatial_query/adapters"`` (beside the query fuzzer's figures).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
import time
from pathlib import Path

import pytest

import security_adapter_builders as B
import vlm_test_model as tm
from reliability_common import Counts, rss_mb, write_results
from rls3_ros.vlm import adapter_trust as at

pytestmark = pytest.mark.timeout(300)

N = int(os.environ.get("RLS3_FUZZ_ADAPTER_DIRS", "200"))
SEED = 26


class Skip(Exception):
    """A mutation that cannot apply to this directory (an earlier one removed or replaced its file)."""


def _regular(p: Path) -> Path:
    import stat

    try:
        if stat.S_ISREG(os.lstat(p).st_mode):
            return p
    except FileNotFoundError:
        pass
    raise Skip(p.name)


def _read(d: Path, name: str) -> bytes:
    return _regular(d / name).read_bytes()


def _special(d: Path) -> bool:
    """True once one of the adapter's own files is no regular file (later mutations would block on a FIFO)."""
    import stat

    for name in (B.CONFIG, B.WEIGHTS, B.META):
        try:
            if not stat.S_ISREG(os.lstat(d / name).st_mode):
                return True
        except FileNotFoundError:
            pass
    return False


def _config(d: Path) -> dict:
    return json.loads(_read(d, B.CONFIG))


def _put_config(d: Path, doc: dict) -> None:
    (d / B.CONFIG).write_text(json.dumps(doc))


def _raw_config(d: Path, text: str) -> None:
    (d / B.CONFIG).write_text(text)


def _safetensors(d: Path):
    raw = _read(d, B.WEIGHTS)
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _put_safetensors(d: Path, header: dict, data: bytes) -> None:
    h = json.dumps(header).encode()
    (d / B.WEIGHTS).write_bytes(struct.pack("<Q", len(h)) + h + data)


def _replace_file(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


# -- mutations: name -> fn(rng, dir, ctx); harmful unless listed in HARMLESS --------------------------------
def m_cfg_random_bytes(rng, d, ctx):
    (d / B.CONFIG).write_bytes(bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 2000))))


def m_cfg_truncated(rng, d, ctx):
    raw = _read(d, B.CONFIG)
    (d / B.CONFIG).write_bytes(raw[: rng.randint(0, len(raw) - 2)])


def m_cfg_not_object(rng, d, ctx):
    _raw_config(d, rng.choice(["[]", "[1, 2]", "42", '"LORA"', "null", "true"]))


def m_cfg_deep_nesting(rng, d, ctx):
    depth = rng.choice([5000, 30000])
    _raw_config(d, '{"r": ' + "[" * depth + "]" * depth + "}")


def m_cfg_oversize(rng, d, ctx):
    doc = _config(d)
    _raw_config(d, json.dumps(doc) + " " * (70 * 1024))


def m_cfg_non_utf8(rng, d, ctx):
    (d / B.CONFIG).write_bytes(b'{"r": "\xff\xfe\xfd"}')


def m_cfg_r_wrong_type(rng, d, ctx):
    doc = _config(d)
    doc["r"] = rng.choice(["8", 4.0, True, None, [4], {"r": 4}])
    _put_config(d, doc)


def m_cfg_r_out_of_range(rng, d, ctx):
    doc = _config(d)
    doc["r"] = rng.choice([0, -1, 257, 100_000_000, 10 ** 30])
    _put_config(d, doc)


def m_cfg_r_huge_literal(rng, d, ctx):  # beyond Python's int-from-text digit limit
    raw = _read(d, B.CONFIG).decode()
    _raw_config(d, raw.replace('"r": 4', '"r": 1' + "0" * rng.choice([400, 5000]), 1))


def m_cfg_r_mismatch(rng, d, ctx):  # a valid rank that the weights do not have: the model refuses it
    doc = _config(d)
    doc["r"] = rng.choice([2, 8, 16])
    _put_config(d, doc)


def m_cfg_alpha_bad(rng, d, ctx):
    raw = _read(d, B.CONFIG).decode()
    bad = rng.choice(["NaN", "Infinity", "-Infinity", "-1", "0", "1e308", '"16"', "true", "1" + "0" * 400])
    _raw_config(d, raw.replace('"lora_alpha": 8', f'"lora_alpha": {bad}', 1))


def m_cfg_dropout_bad(rng, d, ctx):
    doc = _config(d)
    doc["lora_dropout"] = rng.choice([1.0, -0.5, 7, "0.1"])
    _put_config(d, doc)


def m_cfg_targets_bad(rng, d, ctx):
    doc = _config(d)
    doc["target_modules"] = rng.choice([".*", "fc1", [], ["nope"], [1], ["fc1"] * 100, ["a b"], None, ["fc1", "(a+)+$"]])
    _put_config(d, doc)


def m_cfg_unknown_key(rng, d, ctx):
    doc = _config(d)
    doc[rng.choice(["exec", "__class__", "loader", "x" * 50])] = rng.choice([1, "os.system", None, {}])
    _put_config(d, doc)


def m_cfg_code_or_work_option(rng, d, ctx):
    doc = _config(d)
    key, value = rng.choice([
        ("megatron_core", "os"), ("megatron_config", {"tensor_model_parallel_size": 1}), ("init_lora_weights", "pissa"),
        ("init_lora_weights", "loftq"), ("layer_replication", [[0, 1]]), ("modules_to_save", ["fc1"]), ("use_dora", True),
        ("task_type", "CAUSAL_LM"), ("peft_type", "LOHA"), ("bias", "all"), ("rank_pattern", {"fc1": 100000}),
        ("alpha_pattern", {"fc1": float("nan")}), ("exclude_modules", ".*"), ("layers_pattern", "(a+)+$"),
        ("eva_config", {"rho": 2.0}), ("trainable_token_indices", [1, 2]), ("auto_mapping", {"x": 1}),
    ])
    doc[key] = value
    (d / B.CONFIG).write_text(json.dumps(doc))  # allow_nan: NaN is written as the bare token


def m_cfg_missing_key(rng, d, ctx):
    doc = _config(d)
    doc.pop(rng.choice(["r", "lora_alpha", "target_modules", "peft_type"]))
    _put_config(d, doc)


def m_cfg_special_file(rng, d, ctx):
    p = d / B.CONFIG
    kind = rng.choice(["fifo", "dir", "symlink_in", "symlink_out"])
    target = ctx["good_dir"] / B.CONFIG if kind == "symlink_in" else ctx["outside_file"]
    _replace_file(p)
    if kind == "fifo":
        os.mkfifo(p)
    elif kind == "dir":
        p.mkdir()
    else:
        os.symlink(target, p)


def m_w_missing(rng, d, ctx):
    (d / B.WEIGHTS).unlink()


def m_w_pickle_only(rng, d, ctx):
    os.rename(d / B.WEIGHTS, d / "adapter_model.bin")


def m_w_bytes(rng, d, ctx):
    raw = _read(d, B.WEIGHTS)
    kind = rng.choice(["empty", "truncated", "random", "short"])
    data = {"empty": b"", "truncated": raw[: rng.randint(8, len(raw) - 1)], "short": raw[:5],
            "random": bytes(rng.getrandbits(8) for _ in range(rng.randint(8, 4000)))}[kind]
    (d / B.WEIGHTS).write_bytes(data)


def m_w_header_length(rng, d, ctx):
    raw = _read(d, B.WEIGHTS)
    n = rng.choice([2 ** 63, 2 ** 64 - 1, 10 ** 9, len(raw)])
    (d / B.WEIGHTS).write_bytes(struct.pack("<Q", n) + raw[8:])


def m_w_header_not_json(rng, d, ctx):
    _, data = _safetensors(d)
    h = rng.choice([b"not json", b"[1,2,3]", b'{"a": ', b"\xff\xfe"])
    (d / B.WEIGHTS).write_bytes(struct.pack("<Q", len(h)) + h + data)


def m_w_tensor_entries(rng, d, ctx):
    header, data = _safetensors(d)
    names = [k for k in header if k != "__metadata__"]
    name = rng.choice(names)
    kind = rng.choice(["non_lora", "offsets", "shape", "dtype", "extra_key", "rank", "not_dict", "metadata"])
    t = header[name]
    if kind == "non_lora":
        header[name.replace("lora_A", "base").replace("lora_B", "base")] = header.pop(name)
    elif kind == "offsets":
        t["data_offsets"] = rng.choice([[0, 10 ** 12], [-8, 0], [len(data) + 8, len(data) + 16], [5, 3], "0"])
    elif kind == "shape":
        t["shape"] = rng.choice([[10 ** 12, 4], [-1, 4], [1, 2, 3, 4, 5], "4x4", [2, 2]])
    elif kind == "dtype":
        t["dtype"] = rng.choice(["X99", "", 7, "F32 "])
    elif kind == "extra_key":
        t["exec"] = "os.system"
    elif kind == "rank":  # lora_A claiming a rank above the cap (its bytes would not match either)
        t["shape"] = [100_000, t["shape"][-1]] if "lora_A" in name else [t["shape"][0], 100_000]
    elif kind == "not_dict":
        header[name] = [1, 2, 3]
    else:
        header["__metadata__"] = {"format": 1}
    _put_safetensors(d, header, data)


def m_w_wrong_for_model(rng, d, ctx):  # well-formed LoRA tensors of shapes this model does not have
    import torch
    from safetensors.torch import save_file

    header, _ = _safetensors(d)
    tensors = {k: torch.zeros(list(reversed(v["shape"]))) for k, v in header.items() if k != "__metadata__"}
    save_file(tensors, str(d / B.WEIGHTS))


def m_w_special_file(rng, d, ctx):
    p = d / B.WEIGHTS
    kind = rng.choice(["fifo", "dir", "symlink_in", "symlink_out", "dev_null"])
    _replace_file(p)
    if kind == "fifo":
        os.mkfifo(p)
    elif kind == "dir":
        p.mkdir()
    elif kind == "dev_null":
        os.symlink("/dev/zero", p)
    else:
        os.symlink(ctx["good_dir"] / B.WEIGHTS if kind == "symlink_in" else ctx["outside_file"], p)


def m_meta_missing(rng, d, ctx):
    (d / B.META).unlink()


def m_meta_bad(rng, d, ctx):
    meta = json.loads(_read(d, B.META))
    kind = rng.choice(["invalid", "not_object", "no_fp", "other_fp", "fp_type", "other_family", "oversize", "fifo"])
    if kind == "invalid":
        (d / B.META).write_bytes(b'{"base_fingerprint": ')
    elif kind == "not_object":
        (d / B.META).write_text(json.dumps([meta]))
    elif kind == "no_fp":
        meta.pop("base_fingerprint")
        (d / B.META).write_text(json.dumps(meta))
    elif kind == "other_fp":
        meta["base_fingerprint"] = ctx["other_fingerprint"]
        (d / B.META).write_text(json.dumps(meta))
    elif kind == "fp_type":
        meta["base_fingerprint"] = rng.choice([None, 123, [meta["base_fingerprint"]], "", "f" * 5000])
        (d / B.META).write_text(json.dumps(meta))
    elif kind == "other_family":
        meta["family"] = rng.choice(["grounded", "generative", 5])
        (d / B.META).write_text(json.dumps(meta))
    elif kind == "oversize":
        meta["pad"] = " " * (70 * 1024)
        (d / B.META).write_text(json.dumps(meta))
    else:
        (d / B.META).unlink()
        os.mkfifo(d / B.META)


# harmless changes: the adapter must still load
def h_extra_file(rng, d, ctx):
    (d / rng.choice(["notes.txt", "training_args.json", ".hidden"])).write_bytes(os.urandom(rng.randint(0, 300)))


def h_extra_special_file(rng, d, ctx):  # files the check never reads may be anything
    kind = rng.choice(["fifo", "symlink_out"])
    p = d / f"unrelated_{kind}"
    if kind == "fifo":
        os.mkfifo(p)
    else:
        os.symlink(ctx["outside_file"], p)


def h_readme_removed(rng, d, ctx):
    if (d / "README.md").exists():
        (d / "README.md").unlink()


def h_keys_shuffled(rng, d, ctx):
    doc = _config(d)
    items = list(doc.items())
    rng.shuffle(items)
    _put_config(d, dict(items))


def h_alpha_float(rng, d, ctx):
    doc = _config(d)
    doc["lora_alpha"] = rng.choice([8.0, 16, 0.5])
    _put_config(d, doc)


def h_meta_extra(rng, d, ctx):
    meta = json.loads(_read(d, B.META))
    meta["note"] = "trained on Tuesday"
    (d / B.META).write_text(json.dumps(meta))


MUTATIONS = {name[2:]: fn for name, fn in globals().items() if name.startswith(("m_", "h_")) and callable(fn)}
HARMLESS = {name[2:] for name in globals() if name.startswith("h_")}


def test_fuzzed_adapter_directories_are_refused_with_reasons_or_load_never_crash(tmp_path):
    rng = random.Random(SEED)
    roots, outside = tmp_path / "roots", tmp_path / "outside"
    roots.mkdir()
    outside.mkdir()
    good = Path(B.good_adapter(roots / "good", seed=1))
    (outside / "secret.bin").write_bytes(b"\0" * 64)
    other_meta = json.loads((Path(B.good_adapter(tmp_path / "other_base", seed=2, base_seed=1)) / B.META).read_text())
    ctx = {"good_dir": good, "outside_file": outside / "secret.bin",
           "other_fingerprint": other_meta["base_fingerprint"]}
    model = tm.TinySpatialVLM()
    base = at.base_identity(model)
    assert base.fingerprint and base.fingerprint != ctx["other_fingerprint"]
    policy = at.AdapterPolicy.for_roots([roots])
    img = tm.make_samples(1, seed=9)[0].image

    counts, examples, wrong = Counts(), {}, []
    names = sorted(MUTATIONS)
    harmful = [n for n in names if n not in HARMLESS]
    rss0, t0 = rss_mb(os.getpid()), time.monotonic()
    for i in range(N):
        d = roots / f"case_{i:03d}"
        shutil.copytree(good, d)
        if i % 10 == 0:  # every tenth: harmless changes only (or none)
            chosen = rng.sample(sorted(HARMLESS), rng.randint(0, 2))
        else:
            chosen = [rng.choice(harmful)] + rng.sample(names, rng.randint(0, 2))
        # harmless changes first: one applied after a harmful one could rewrite (undo) it
        chosen = sorted(dict.fromkeys(chosen), key=lambda m: m not in HARMLESS)
        applied = []
        for m in chosen:
            if _special(d):
                break
            try:
                MUTATIONS[m](rng, d, ctx)
                applied.append(m)
            except (Skip, FileNotFoundError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError):
                continue
        counts.add("total", *(f"mutation:{m}" for m in applied))
        chosen = applied
        expect_load = all(m in HARMLESS for m in chosen)
        try:
            with at.stage_adapter(str(d), policy, base) as staged:
                at.load_staged(model, staged)
            outcome = "loaded"
            assert model.adapter == str(d)
            assert model.where(img, "red square", "blue square")
        except at.AdapterRefused as e:
            outcome, msg = "refused", str(e)
            counts.add("refused_at:model_load" if msg.startswith("adapter does not fit") else "refused_at:check")
            if not msg.strip() or "\n" in msg:
                wrong.append((i, chosen, f"refusal without a one-line reason: {msg!r}"))
            examples.setdefault(chosen[-1] if chosen else "none", msg[:160])  # the last: the harmful one
        except Exception as e:  # noqa: BLE001 - counted: the assertion below wants none
            outcome = "crashed"
            examples.setdefault(f"crash:{chosen[-1] if chosen else 'none'}", f"{type(e).__name__}: {e}"[:300])
        counts.add(f"answer:{outcome}")
        if (outcome == "loaded") != expect_load and outcome != "crashed":
            wrong.append((i, chosen, outcome, examples.get(chosen[-1] if chosen else "none", "")))
        shutil.rmtree(d, ignore_errors=True)
    wall, rss1 = time.monotonic() - t0, rss_mb(os.getpid())
    model.reset_adapter()
    assert model.where(img, "red square", "blue square")

    c = counts.as_dict()
    summary = {"requests": c.get("total", 0), "per_kind": c, "wall_s": round(wall, 1), "seed": SEED,
               "rss_mb_start": round(rss0, 1), "rss_mb_end": round(rss1, 1),
               "outcomes": {k: c.get(f"answer:{k}", 0) for k in ("refused", "loaded", "crashed")}}
    print(f"\nadapter fuzz: {summary['requests']} directories in {wall:.1f} s: {summary['outcomes']}")
    for k, v in sorted(examples.items()):
        print(f"  {k:28s} {v}")
    write_results("fuzz_counts.json", "spatial_query/adapters", summary)
    crashes = {k: v for k, v in examples.items() if k.startswith("crash:")}
    assert summary["outcomes"]["crashed"] == 0, crashes
    assert not wrong, wrong[:5]
    assert summary["outcomes"]["loaded"] >= N // 10 - 2 and summary["outcomes"]["refused"] >= N // 2
