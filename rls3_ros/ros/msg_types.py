"""Python message classes for names read from bags or the ROS graph, from a fixed allow-list.

``rls3 replay`` and ``rls3 record`` need an rclpy message class (its type support) to publish or
subscribe raw CDR; rclpy has no generic publisher. The name comes from untrusted input (a bag's
connection, a topic type advertised on an unauthenticated graph), so it never names a module to
import: it is checked against the ROS naming rules and its package must be one of
:data:`rls3_ros.bags.checks.PUBLISHABLE_PACKAGES`, each mapped to a fixed module path below.
"""

from __future__ import annotations

import importlib
from typing import Dict

from rls3_ros.bags.checks import PUBLISHABLE_PACKAGES, BadTypeName, printable, split_msgtype

# package -> the module holding its generated message classes (fixed strings, not built from input)
_MSG_MODULES: Dict[str, str] = {pkg: pkg + ".msg" for pkg in PUBLISHABLE_PACKAGES}


class UnsupportedType(ValueError):
    """No message class may be loaded for this name; ``str()`` is a one-line reason."""


def message_class(msgtype: str):
    """The rclpy message class of ``pkg/msg/Name`` for an allowed package; UnsupportedType else."""
    try:
        pkg, name = split_msgtype(msgtype)
    except BadTypeName as exc:
        raise UnsupportedType(str(exc)) from None
    module_name = _MSG_MODULES.get(pkg)
    if module_name is None:
        raise UnsupportedType(
            f"message type {printable(msgtype)!r} is not in an allowed interface package "
            f"({', '.join(sorted(_MSG_MODULES)[:8])}, ...): not loading code for it")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise UnsupportedType(f"interface package {pkg} is not installed here ({printable(msgtype)})") from None
    cls = module.__dict__.get(name)
    support = getattr(type(cls), "_TYPE_SUPPORT", None) if isinstance(cls, type) else None
    if cls is None or not isinstance(cls, type) or not str(getattr(cls, "__module__", "")).startswith(module_name + "."):
        raise UnsupportedType(f"{pkg} has no message {name}")
    if support is None:
        try:
            cls.__class__.__import_type_support__()
        except Exception as exc:  # noqa: BLE001 - a broken install
            raise UnsupportedType(f"no type support for {printable(msgtype)}: {exc}") from None
    return cls
