"""A node's ROS parameters declared from one table: one ``Param`` per parameter (name, default,
type, range or choices, read-only, one-line doc).

From the table a node
- declares every parameter with a ``ParameterDescriptor`` (description, integer / floating-point
  range, read-only): ``declare``;
- checks the start values: one line per bad value naming the parameter, its value and what it
  accepts (``check``; ``declare_parameters`` raises ``NodeStartupError`` with them, exit code 2
  through ``run_node``);
- attaches the ranges once the values are valid (``attach_ranges``: a later ``ros2 param set``
  out of range is then refused by rclpy);
- and renders its parameter list for the docs and ``--help`` (``markdown_table``, ``help_text``;
  ``python -m rls3_ros.ros.node_params`` prints every node's, ``--write-docs`` regenerates the
  tables in ``docs/``).

Adding a parameter is one ``Param`` in the node's table. The ``rl_sampler``'s table is its run
schema (``rls3_ros.loop.config.NODE_PARAMS``, validated by the schema): ``declare_config_parameters``.

Order of events at start: every parameter is declared without range (a wrongly typed value is a
one-line ``NodeStartupError`` naming the parameter); read-only parameters get their final
descriptor at once (range only when the start value is in it: rclpy refuses a descriptor change on
a read-only parameter later); then the values are checked and the other ranges attached.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterTypeException, ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter

from rls3_ros.loop.config import NODE_PARAMS, config_from_params, interval_text
from rls3_ros.ros.node_main import NodeStartupError

_INT64 = (-(2 ** 63), 2 ** 63 - 1)
_ARRAY_TYPES = {"list_str": Parameter.Type.STRING_ARRAY, "list_float": Parameter.Type.DOUBLE_ARRAY,
                "list_int": Parameter.Type.INTEGER_ARRAY, "list_bool": Parameter.Type.BOOL_ARRAY}
_TYPE_NAMES = {"bool": "bool", "int": "integer", "float": "double", "str": "string", "list_str": "string[]",
               "list_float": "double[]", "list_int": "integer[]", "list_bool": "bool[]", "any": "any"}


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (list, tuple)) and value:
        return "list_" + _kind_of(value[0])
    return "any"


def _num(v: float) -> str:
    """A bound as written: 0, 45, 22.5, inf."""
    v = float(v)
    return str(int(v)) if v.is_integer() else f"{v:g}"


@dataclass(frozen=True)
class Param:
    """One ROS parameter of a node: everything the node, ``ros2 param describe`` and the docs say about it.

    ``low`` / ``high`` bound a number (inclusive unless ``low_open`` / ``high_open``; ``high=math.inf``
    with ``high_open`` asks for a finite number); ``choices`` the strings accepted (compared after
    ``strip().lower()`` when ``fold_case``); ``dynamic_typing`` lets a value of another type through
    (e.g. a list or a ``:``-separated string). ``kind`` is inferred from the default when empty."""

    name: str
    default: Any
    doc: str
    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False
    choices: Tuple[str, ...] = ()
    read_only: bool = False
    dynamic_typing: bool = False
    fold_case: bool = False
    kind: str = ""

    def __post_init__(self) -> None:
        if not self.kind:
            object.__setattr__(self, "kind", _kind_of(self.default))
        if not self.doc.strip():
            raise ValueError(f"parameter {self.name}: empty doc")

    # -- what it accepts ------------------------------------------------------------------
    def allowed(self) -> str:
        """What the parameter accepts, e.g. ``>= 1``, ``in (0, 45)``, ``one of raw | compressed``."""
        if self.choices:
            return "one of " + " | ".join(self.choices)
        return interval_text(self.low, not self.low_open, self.high, not self.high_open, _num)

    def error(self, value: Any) -> Optional[str]:
        """Why ``value`` is not accepted (one line naming parameter, value and range), or None."""
        if self.choices:
            v = str(value).strip().lower() if self.fold_case else value
            if v not in self.choices:
                return f"{self.name} {value!r} unknown; {self.name} must be {self.allowed()}"
            return None
        if self.low is None and self.high is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        v = float(value)
        ok = not math.isnan(v)
        if self.low is not None:
            ok = ok and (v > self.low if self.low_open else v >= self.low)
        if self.high is not None:
            ok = ok and (v < self.high if self.high_open else v <= self.high)
        return None if ok else f"{self.name} must be {self.allowed()} (got {value!r})"

    # -- ROS -------------------------------------------------------------------------------
    def descriptor(self, with_range: bool = True) -> ParameterDescriptor:
        """The parameter's ``ParameterDescriptor``: doc (+ what it accepts), read-only, dynamic typing
        and (numbers, ``with_range``) its range; ROS ranges are inclusive, an open bound is checked
        by ``error`` at start."""
        allowed = self.allowed()
        d = ParameterDescriptor(description=f"{self.doc} ({allowed})" if allowed else self.doc,
                                read_only=self.read_only, dynamic_typing=self.dynamic_typing or self.default is None)
        if with_range and not d.dynamic_typing and (self.low is not None or self.high is not None):
            if self.kind == "int":
                lo = _INT64[0] if self.low is None else max(_INT64[0], int(math.ceil(self.low)))
                hi = _INT64[1] if self.high is None or math.isinf(self.high) else int(math.floor(self.high))
                d.integer_range = [IntegerRange(from_value=lo, to_value=hi, step=0)]
            elif self.kind == "float":
                lo = -sys.float_info.max if self.low is None else float(self.low)
                hi = sys.float_info.max if self.high is None or math.isinf(self.high) else float(self.high)
                d.floating_point_range = [FloatingPointRange(from_value=lo, to_value=hi, step=0.0)]
        return d

    @property
    def has_range(self) -> bool:
        return self.kind in ("int", "float") and (self.low is not None or self.high is not None)


def param_from_schema(p) -> Param:
    """A run-schema parameter (``rls3_ros.loop.config.NodeParam``) as a ``Param``: its description
    already says what it accepts; the schema checks the values (``config_from_params``)."""
    return _SchemaParam(p.name, p.default, p.description, low=p.low, high=p.high, kind=p.kind)


@dataclass(frozen=True)
class _SchemaParam(Param):
    """A parameter whose doc already includes what it accepts and whose value the schema checks."""

    def allowed(self) -> str:
        return ""

    def error(self, value: Any) -> Optional[str]:
        return None


# -- declaring ------------------------------------------------------------------------------
def declare(node: Node, table: Sequence[Param]) -> None:
    """Declare every parameter of ``table`` on ``node`` (no range yet; read-only ones final at once,
    with their range when the start value is in it). A wrongly typed value: ``NodeStartupError``."""
    for p in table:
        d = p.descriptor(with_range=False)
        d.read_only = False  # made read-only below, once its final descriptor is known
        try:
            if isinstance(p.default, list) and not p.default and p.kind in _ARRAY_TYPES:
                node.declare_parameter(p.name, _ARRAY_TYPES[p.kind], d)  # rclpy cannot infer an empty list's type
            else:
                node.declare_parameter(p.name, p.default, d)
        except InvalidParameterTypeException as e:
            t = type(p.default).__name__
            raise NodeStartupError(f"parameter {p.name} must be {'an' if t[0] in 'aeiou' else 'a'} {t} "
                                   f"(default {p.default!r}): {' '.join(str(e).split())}") from None
    for p in table:
        if p.read_only:
            d = p.descriptor(with_range=p.error(value_of(node, p.name)) is None)
            d.type = node.describe_parameter(p.name).type
            node.set_descriptor(p.name, d)


def value_of(node: Node, name: str) -> Any:
    """A parameter's value (None: a typed empty list left unset)."""
    try:
        return node.get_parameter(name).value
    except ParameterUninitializedException:
        return None


def check(node: Node, table: Sequence[Param]) -> List[str]:
    """One line per parameter of ``table`` whose current value is not accepted."""
    return [e for e in (p.error(value_of(node, p.name)) for p in table) if e]


def attach_ranges(node: Node, table: Sequence[Param]) -> None:
    """Attach the ranges of the (valid) non-read-only parameters: later sets out of range are refused."""
    for p in table:
        if p.has_range and not p.read_only and p.default is not None:
            d = p.descriptor()
            d.type = node.describe_parameter(p.name).type
            node.set_descriptor(p.name, d)


def declare_parameters(node: Node, table: Sequence[Param],
                       validate: Optional[Callable[[Dict[str, Any]], Dict[str, Any]]] = None) -> Dict[str, Any]:
    """Declare ``table`` on ``node``, check the start values (``NodeStartupError``: one line per bad
    value, joined by "; "), then ``validate(values)`` (checks across parameters; a ``ValueError``
    becomes the ``NodeStartupError``) and attach the ranges; returns the values by name."""
    declare(node, table)
    errors = check(node, table)
    if errors:
        raise NodeStartupError("; ".join(errors))
    values = {p.name: value_of(node, p.name) for p in table}
    if validate is not None:
        try:
            values = validate(values)
        except ValueError as e:
            raise NodeStartupError(str(e)) from None
    attach_ranges(node, table)
    return values


def config_table() -> List[Param]:
    """The rl_sampler's table: the run schema's node parameters (``rls3_ros.loop.config``)."""
    return [param_from_schema(p) for p in NODE_PARAMS.values()]


def declare_config_parameters(node: Node) -> Dict[str, Any]:
    """Declare every parameter of the run schema (``NODE_PARAMS``) on ``node``, validate the values
    against the schema (``NodeStartupError`` naming the parameter, its value and the allowed range)
    and attach the ranges; returns the validated values by parameter name."""

    def validate(values: Dict[str, Any]) -> Dict[str, Any]:
        dump = config_from_params(values).model_dump()
        return {name: dump[p.targets[0][0]][p.targets[0][1]] for name, p in NODE_PARAMS.items()}

    return declare_parameters(node, config_table(), validate)


# -- rendering ------------------------------------------------------------------------------
def _shown_default(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_shown_default(x) for x in v) + "]"
    return "unset" if v is None else repr(v)


def markdown_table(table: Sequence[Param]) -> str:
    """The parameter list as a markdown table (the docs' tables are this, see ``write_docs``)."""
    lines = ["| parameter | type | default | accepts | description |", "| --- | --- | --- | --- | --- |"]
    for p in table:
        accepts = p.allowed() or ""
        if p.read_only:
            accepts = f"{accepts}; read-only" if accepts else "read-only"
        doc = p.doc.replace("|", "\\|").replace("<", "\\<")
        accepts = accepts.replace("|", "\\|")
        lines.append(f"| `{p.name}` | {_TYPE_NAMES.get(p.kind, p.kind)} | `{_shown_default(p.default)}` | "
                     f"{accepts} | {doc} |")
    return "\n".join(lines)


def help_text(node_name: str, table: Sequence[Param]) -> str:
    """The parameter list for ``--help``: one line per parameter."""
    lines = [f"{node_name} parameters (set with --ros-args -p name:=value or --params-file; "
             f"ros2 param describe shows the same):"]
    for p in table:
        accepts = p.allowed()
        flags = ", ".join(x for x in (accepts, "read-only" if p.read_only else "") if x)
        lines.append(f"  {p.name} ({_TYPE_NAMES.get(p.kind, p.kind)}, default {_shown_default(p.default)}"
                     f"{', ' + flags if flags else ''}): {p.doc}")
    return "\n".join(lines)


def print_help_if_asked(node_name: str, table: Sequence[Param], args: Optional[List[str]] = None) -> bool:
    """Print ``help_text`` when ``-h`` / ``--help`` comes before ``--ros-args``; True if it did."""
    argv = list(sys.argv[1:] if args is None else args)
    if "--ros-args" in argv:
        argv = argv[: argv.index("--ros-args")]
    if "-h" in argv or "--help" in argv:
        print(help_text(node_name, table))
        return True
    return False


# -- every node's table, the docs ----------------------------------------------------------
NODES = ("sim_bridge", "caption_oracle", "vlm_trainer", "spatial_query", "rl_sampler")
# the docs holding a node's generated parameter table
DOC_TABLES = {"docs/simulator.md": ("sim_bridge",), "docs/vlm_nodes.md": ("vlm_trainer", "spatial_query")}
_BEGIN = "<!-- parameters of {node}: generated from its table, python -m rls3_ros.ros.node_params --write-docs -->"
_END = "<!-- end of the generated parameters of {node} -->"


def node_table(node: str) -> List[Param]:
    """The parameter table of node ``node`` (its module's ``PARAMETERS``; rl_sampler: the run schema)."""
    if node == "rl_sampler":
        return config_table()
    import importlib

    return list(importlib.import_module(f"rls3_ros.ros.nodes.{node}").PARAMETERS)


def with_generated_tables(text: str, tables: Dict[str, Sequence[Param]]) -> str:
    """``text`` (a doc) with the block between each node's markers replaced by its ``markdown_table``."""
    for node, table in tables.items():
        begin, end = _BEGIN.format(node=node), _END.format(node=node)
        if begin not in text or end not in text:
            raise ValueError(f"no generated-parameters markers of {node} ({begin!r} ... {end!r})")
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{begin}\n{markdown_table(table)}\n{end}{tail}"
    return text


def write_docs(root: str = ".") -> List[str]:
    """Regenerate the parameter tables in the docs (``DOC_TABLES``); returns the files changed."""
    import os

    changed = []
    for rel, nodes in DOC_TABLES.items():
        path = os.path.join(root, rel)
        with open(path, encoding="utf-8") as f:
            old = f.read()
        new = with_generated_tables(old, {n: node_table(n) for n in nodes})
        if new != old:
            with open(path, "w", encoding="utf-8") as f:
                f.write(new)
            changed.append(rel)
    return changed


if __name__ == "__main__":
    if "--write-docs" in sys.argv[1:]:
        print("\n".join(write_docs()) or "docs up to date")
    else:
        for name in [a for a in sys.argv[1:] if not a.startswith("-")] or NODES:
            print(help_text(name, node_table(name)) + "\n")
