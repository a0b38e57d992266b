"""The run configuration round-trips and flows down as one typed object (rls3_ros/loop/config.py):

(a) the default ``TrainConfig`` dumped to YAML and read back the way ``rls3 train --config`` reads a
    file gives an equal object, and so does a run's ``config.yaml`` read back the way ``--resume`` reads
    it; the shipped ``config/train.yaml`` (and its quick section) and ``config/training.yaml``'s
    rl_sampler section validate;
(b) adding a loop parameter is one edit: a ``LoopConfig`` with one more field, swapped into the schema,
    is accepted by ``rls3 train``'s configuration path, listed by ``describe()`` and reaches the object
    the scheduler of a real loop receives, with no other edit.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rls3_ros.cli.train import train_config
from rls3_ros.loop import config as C

ROOT = Path(__file__).resolve().parents[1]


def _write(path: Path, data) -> str:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def test_the_default_config_round_trips_through_a_config_file(tmp_path):
    default = C.TrainConfig()
    # every key, unset ones (None) included: the file must override what config/train.yaml sets
    loaded = train_config(_write(tmp_path / "default.yaml", default.model_dump(mode="json")))
    assert type(loaded) is C.TrainConfig and loaded == default
    # a changed value in every section survives the same path
    changed = default.model_copy(update={
        "run": default.run.model_copy(update={"agent": "miner", "seed": 7, "scene_types": ["kitchen"]}),
        "loop": default.loop.model_copy(update={"E": 3, "eta": 0.5, "gate": False}),
        "env": default.env.model_copy(update={"j2_clip": 4.5, "n_categories": 12}),
        "agent": default.agent.model_copy(update={"ent_coef": "auto", "gamma": 0.9}),
        "eval": default.eval.model_copy(update={"extra_splits": ["val"], "test_scenes": 9})})
    again = train_config(_write(tmp_path / "changed.yaml", changed.model_dump(mode="json")))
    assert again == changed and again != default


def test_a_run_config_yaml_reads_back_as_the_config_that_ran(tmp_path):
    """What run_inprocess writes (``to_dict``: unset keys left out) and ``rls3 train --resume`` reads back."""
    from rls3_ros.loop.run_dir import read_yaml, write_yaml

    cfg = train_config(sets=["run.agent=teacher", "agent.temperature=0.5", "loop.patience=2"])
    path = str(tmp_path / "config.yaml")
    write_yaml(path, C.to_dict(cfg))
    assert C.validate_config(read_yaml(path)) == cfg


def test_the_shipped_config_files_validate():
    for quick in (False, True):
        cfg = train_config(quick=quick)
        assert isinstance(cfg, C.TrainConfig)
    assert train_config(quick=True).loop.budget_valid_samples < train_config().loop.budget_valid_samples
    training = yaml.safe_load((ROOT / "config" / "training.yaml").read_text())
    sections = [v["ros__parameters"] for k, v in training.items() if k.endswith("rl_sampler")]
    assert sections, "config/training.yaml has an rl_sampler section"
    for values in sections:
        assert isinstance(C.config_from_params(values), C.GraphRunConfig)
    with pytest.raises(ValueError, match="unknown key loop.warmup_episodes"):
        train_config(sets=["loop.warmup_episodes=5"])  # not a parameter (yet: see the next test)


class _Loop(C.LoopConfig):
    """The loop section with one more key, as a developer would add it to LoopConfig."""

    warmup_episodes: int = C._f(3, "episodes before the first fine-tune counts (a new loop key)", ge=0)


class _Train(C.TrainConfig):
    loop: _Loop = _Loop()


class _Graph(C.GraphRunConfig):
    loop: _Loop = _Loop()


def test_a_new_loop_parameter_reaches_the_scheduler_with_no_other_edit(tmp_path, monkeypatch):
    from rls3_ros.captions.oracle import CaptionOracle
    from rls3_ros.loop.env import BackendSource
    from rls3_ros.loop.run_dir import RunDir
    from rls3_ros.loop.runner import LoopRunner, make_envs
    from rls3_ros.loop.scheduler import Trainer
    from rls3_ros.sim.factory import make_backend

    monkeypatch.setattr(C, "TrainConfig", _Train)
    monkeypatch.setattr(C, "GraphRunConfig", _Graph)
    # rls3 train's path: --set validates against the schema, the default fills in, a bad value is refused
    cfg = train_config(sets=["loop.warmup_episodes=5", "run.agent=random", "loop.T=3", "loop.T0=2"])
    assert isinstance(cfg.loop, _Loop) and cfg.loop.warmup_episodes == 5
    assert train_config().loop.warmup_episodes == 3
    with pytest.raises(ValueError, match=r"loop.warmup_episodes must be an integer >= 0 \(got -1\)"):
        train_config(sets=["loop.warmup_episodes=-1"])
    # documented where every key is (python -m rls3_ros.loop.config), written to the run's config.yaml
    assert "warmup_episodes: 3  # an integer >= 0; episodes before the first fine-tune counts" in C.describe()
    assert C.to_dict(cfg)["loop"]["warmup_episodes"] == 5
    # a real loop (MuJoCo env, random sampler): the scheduler holds the very object validated above
    src = BackendSource(make_backend("mujoco", image_size=64, seed=0))
    try:
        envs = make_envs(cfg, [src], CaptionOracle().caption_scene, None, list(src.scene_types))
        runner = LoopRunner(cfg, RunDir(str(tmp_path / "run")), envs, Trainer(), None, progress=False,
                            log=lambda m: None)
        try:
            assert runner.sched.config is cfg.loop and runner.sched.config.warmup_episodes == 5
            assert (envs[0].T, envs[0].T0, envs[0].j2_clip) == (3, 2, cfg.env.j2_clip)
        finally:
            runner.close()
    finally:
        src.close()
