"""Dataset format round trip, Hugging Face `datasets` loading, statistics."""

from __future__ import annotations

import numpy as np
import pytest

from rls3_ros.captions import CaptionOracle
from rls3_ros.captions.dataset import load_hf_dataset, scene_record, read_dataset, read_records, write_dataset
from rls3_ros.captions.statistics import plot_statistics, relation_statistics, statistics_markdown
from rls3_ros.core.scene import CameraModel, ObjectState, Sample, SceneState


def make_samples(n: int = 6):
    rng = np.random.default_rng(0)
    oracle = CaptionOracle()
    cam = CameraModel.look_at((-2.0, 0.3, 1.6), (0.0, 0.0, 0.5), 64, 48, 60.0)
    out = []
    for i in range(n):
        objs = [
            ObjectState(f"o{k}", c, d, tuple(float(x) for x in rng.uniform([-0.6, -0.6, 0.4], [0.6, 0.6, 1.2])),
                        size=(0.1, 0.1, 0.12), bbox=(1, 2, 10, 12), active=k < 3, visible_fraction=0.9)
            for k, (c, d) in enumerate([("mug", "red mug"), ("lamp", "lamp"), ("vase", "blue vase"), ("cup", "green cup")])
        ]
        objs[3].position = (0, 0, 1)  # an int-valued position must still be written as floats
        scene = SceneState(f"kitchen-{i}", "kitchen", i, cam, objs, container_ids=["bowl_1"] if i % 2 else [], stamp_ns=10 * i)
        valid = i != 2
        img = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        seg = rng.integers(-1, 4, (48, 64)).astype(np.int32)
        out.append(Sample(f"run/e0-s{i}", img, scene, oracle.caption_scene(scene, rng=i) if valid else [],
                          valid=valid, invalid_reason="" if valid else "overlap", episode=0, step=i,
                          segmentation=seg if i < 3 else None))
    return out


def test_round_trip(tmp_path):
    samples = make_samples()
    write_dataset(samples, tmp_path / "ds")
    back = read_dataset(tmp_path / "ds")
    assert len(back) == len(samples)
    for a, b in zip(samples, back):
        assert a.sample_id == b.sample_id
        np.testing.assert_array_equal(a.image, b.image)
        assert scene_record(a.scene) == scene_record(b.scene)
        assert SceneState.from_dict(b.scene.to_dict()).objects[0].position == a.scene.objects[0].position
        assert [r.caption for r in a.relations] == [r.caption for r in b.relations]
        assert [r.negatives for r in a.relations] == [r.negatives for r in b.relations]
        assert [r.terms for r in a.relations] == [r.terms for r in b.relations]
        assert (a.valid, a.invalid_reason, a.episode, a.step) == (b.valid, b.invalid_reason, b.episode, b.step)
        if a.segmentation is not None:
            np.testing.assert_array_equal(a.segmentation, b.segmentation)
        else:
            assert b.segmentation is None
    rec = read_records(tmp_path / "ds")[0]
    assert rec["image"] == "images/run_e0-s0.png" and (tmp_path / "ds" / rec["image"]).exists()
    # appending keeps earlier samples, duplicate ids are refused
    with pytest.raises(ValueError, match="duplicate"):
        write_dataset(samples[:1], tmp_path / "ds")


def test_huggingface_datasets_loads_it(tmp_path):
    import datasets

    samples = make_samples()
    write_dataset(samples, tmp_path / "ds")
    plain = datasets.load_dataset("json", data_files=str(tmp_path / "ds" / "samples.jsonl"), split="train",
                                  cache_dir=str(tmp_path / "hf"))
    assert plain.num_rows == len(samples)
    assert plain[0]["relations"][0]["caption"] == samples[0].relations[0].caption
    assert plain[2]["relations"] == [] and plain[2]["valid"] is False
    ds = load_hf_dataset(tmp_path / "ds", cache_dir=tmp_path / "hf2")
    assert ds.num_rows == len(samples)
    img = ds[1]["image"]
    assert img.size == (64, 48)
    np.testing.assert_array_equal(np.asarray(img), samples[1].image)
    assert ds[1]["scene"]["objects"][3]["position"] == [0.0, 0.0, 1.0]


def test_statistics(tmp_path):
    samples = make_samples()
    st = relation_statistics(samples)
    n = sum(len(s.relations) for s in samples)
    assert st["relations"] == n and st["samples"] == len(samples)
    assert sum(st["per_term_count"].values()) == n
    assert sum(st["per_sector"].values()) == n
    assert sum(st["per_term"].values()) == sum(len(r.terms) for s in samples for r in s.relations)
    md = statistics_markdown(st)
    assert "| left |" in md and "| 3 |" in md
    p = plot_statistics(st, tmp_path / "stats.png")
    assert p.stat().st_size > 10_000
