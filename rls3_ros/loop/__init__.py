"""The RLS3 loop: gymnasium environment, agents, hard-example miner and scheduler (pure Python, no ROS).

- ``env``: :class:`~rls3_ros.loop.env.RLS3Env` over a :class:`~rls3_ros.loop.env.SimSource`
  (in-process backend or ROS services), captioned by an injected oracle, rewarded by an injected
  VLM scorer (J2, once per episode).
- ``agents``: SAC (default, the paper's), PPO, random (the paper's baseline), and a non-RL
  hard-example miner, behind one ``run`` interface.
- ``scheduler``: T, T0, E, eta, replay of base data, evaluation and early stopping, checkpoints.
- ``run_dir`` / ``report``: run directories, metrics, plots and the report.
"""
