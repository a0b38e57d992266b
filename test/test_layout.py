"""The layout issue 28 asks for, checked: ros/nodes/ holds only nodes, no module over 600 lines."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rls3_ros"


def test_ros_nodes_holds_only_nodes_each_an_entry_point():
    setup = (ROOT / "setup.py").read_text()
    entry_points = set(re.findall(r"rls3_ros\.ros\.nodes\.(\w+):main", setup))
    modules = {p.stem for p in (PACKAGE / "ros" / "nodes").glob("*.py") if p.stem != "__init__"}
    assert modules == entry_points, f"not nodes: {sorted(modules - entry_points)}; missing: {sorted(entry_points - modules)}"
    for name in modules:
        text = (PACKAGE / "ros" / "nodes" / f"{name}.py").read_text()
        assert re.search(r"^def main\(", text, re.M), f"{name}: no main()"
        assert re.search(r"class \w+\((Node|LifecycleNode)\)", text), f"{name}: no node class"


def test_no_module_of_the_package_is_over_600_lines():
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 600}
    assert not long, f"split these by idea: {long}"
