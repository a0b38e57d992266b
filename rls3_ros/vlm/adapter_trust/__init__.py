"""Checks for LoRA adapter directories named by untrusted parties (pure Python, no ROS).

A ROS 2 domain without SROS2 authenticates nobody: an adapter path in a ``SetAdapter`` request or
an ``AdapterInfo`` announcement is chosen by anyone on the network. Before a node does any work for
such a path it must hold that:

- the path lies inside the configured adapter roots after resolving symlinks and ``..``; a path
  outside them, a missing path and a path that is no directory get the *same* refusal, so the
  answer never tells whether an arbitrary path exists;
- every file read is a regular file (``lstat``, then ``open(O_NOFOLLOW | O_NONBLOCK)`` and
  ``fstat``: a FIFO, a device or a symlink is refused without blocking on it) under a size cap;
- ``adapter_config.json`` is a plain LoRA config within limits (rank <= ``max_rank``, finite alpha,
  target modules that are module names of the served base, no regex, no code- or work-selecting
  options such as ``megatron_core``, ``layer_replication`` or PiSSA/LoftQ initialisation, no key
  this module does not know);
- ``adapter_model.safetensors`` exists (pickled ``adapter_model.bin`` is never loaded) and its
  header describes only LoRA tensors of consistent sizes;
- ``rls3_adapter.json`` exists (when the policy asks for it) and records the fingerprint of the
  served base (an adapter only fits the base it was trained on) and its family.

The checked bytes are copied into a private staging directory and the model loads from there,
so what is loaded is exactly what was checked (a file swapped after the check is never read by
the model or peft; safetensors would hold the GIL while blocked on a FIFO and freeze every
thread of the process). :func:`stage_adapter_bounded` runs the read on a worker thread with a
timeout. Every refusal raises :class:`AdapterRefused` with a one-line reason.

Layout: ``policy.py`` (file names, ``AdapterRefused``, limits, policy, roots and path
resolution), ``files.py`` (reading regular files under caps), ``contents.py`` (what the config,
weights header and meta may say), ``staging.py`` (the staged copy, the timed read, loading into
a model), ``identity.py`` (the served base's fingerprint and module names, ``rls3_adapter.json``).
"""

from rls3_ros.vlm.adapter_trust.contents import check_lora_config, check_meta, check_safetensors
from rls3_ros.vlm.adapter_trust.identity import (base_identity, model_fingerprint, module_names, weights_fingerprint,
                                                 write_adapter_meta)
from rls3_ros.vlm.adapter_trust.policy import (ADAPTER_CONFIG, ADAPTER_META, ADAPTER_PICKLE, ADAPTER_WEIGHTS,
                                               AdapterLimits, AdapterPolicy, AdapterRefused, BaseIdentity, parse_roots,
                                               resolve_adapter_dir)
from rls3_ros.vlm.adapter_trust.staging import (StagedAdapter, load_checked, load_staged, refusal_reason,
                                                relabel_adapter, stage_adapter, stage_adapter_bounded)

__all__ = [
    "ADAPTER_CONFIG", "ADAPTER_META", "ADAPTER_PICKLE", "ADAPTER_WEIGHTS", "AdapterLimits", "AdapterPolicy",
    "AdapterRefused", "BaseIdentity", "StagedAdapter", "base_identity", "check_lora_config", "check_meta",
    "check_safetensors", "load_checked", "load_staged", "model_fingerprint", "module_names", "parse_roots",
    "refusal_reason", "relabel_adapter", "resolve_adapter_dir", "stage_adapter", "stage_adapter_bounded",
    "weights_fingerprint", "write_adapter_meta",
]
