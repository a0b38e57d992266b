"""`rls3 captions` on the real MuJoCo backend: a small dataset, its stats and example figure."""

from __future__ import annotations

import json

from rls3_ros.captions.dataset import read_dataset
from rls3_ros.cli.dataset import cli_captions
from rls3_ros.captions.parse import parse_caption
from rls3_ros.captions.oracle import CaptionOracle


def test_cli_captions_small_dataset(tmp_path):
    out = tmp_path / "ds"
    assert cli_captions(["--n", "6", "--out", str(out), "--seed", "2", "--size", "64", "--quiet",
                         "--moves-per-reset", "2"]) == 0
    samples = read_dataset(out)
    assert len(samples) == 6
    assert len({s.sample_id for s in samples}) == 6
    oracle = CaptionOracle()
    for s in samples:
        assert s.image.shape == (64, 64, 3) and s.segmentation.shape == (64, 64)
        assert s.relations
        for r in s.relations:
            # the stored caption is what the oracle says about the stored scene
            assert oracle.relation(s.scene, r.subject_id, r.reference_id).terms == r.terms
            assert parse_caption(r.caption)[1] == r.terms
            assert r.negatives and r.caption not in r.negatives
    st = json.loads((out / "stats.json").read_text())
    assert st["relations"] == sum(len(s.relations) for s in samples)
    assert (out / "stats.md").read_text().startswith(f"{st['relations']} relations in 6 samples")
    assert (out / "stats.png").stat().st_size > 10_000
    # a second run into the same directory is refused
    try:
        cli_captions(["--n", "1", "--out", str(out), "--quiet"])
    except SystemExit as e:
        assert e.code == 2
    else:
        raise AssertionError("expected a refusal")
