"""The RLS3 loop: configuration, gymnasium environment, rewards, samplers, scheduler, runner (pure Python, no ROS).

- ``config`` / ``config_files``: the run-configuration schema and the YAML files + ``--set`` over it.

- ``env``: :class:`~rls3_ros.loop.env.RLS3Env` over a :class:`~rls3_ros.loop.env.SimSource`
  (in-process backend or ROS services), captioned by an injected oracle, rewarded by an injected
  VLM scorer (J2, once per episode; ``reward``: J2 and its adapter baseline).
- ``agents`` / ``mode_samplers`` / ``samplers``: SAC (default, the paper's), PPO, random (the
  paper's baseline), the hard-example miner, the upper bound and the learning-progress teacher.
- ``scheduler``: T, T0, E, eta, replay of base data, evaluation and early stopping, checkpoints;
  ``loop_counters``: its counters and statistics; ``background``: its background fine-tune thread.
- ``runner`` / ``sim_worker``: the in-process loop and its simulator worker processes.
- ``run_dir`` / ``report``: run directories, metrics, plots and the report.
"""
