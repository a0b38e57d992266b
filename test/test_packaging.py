"""setup.py and package.xml are complete: every data_files / package_data pattern matches a
file, the Fast DDS profile is installed, and every third-party module rls3_ros imports is a
declared dependency (pinned in requirements.txt; in package.xml as a rosdep key or on its
pip-only list). A ROS package without a PyPI wheel (launch, launch_ros) only needs its
package.xml key."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "rls3_ros"

# pip distribution -> its rosdep key, for the libraries that have one
ROSDEP_KEYS = {"numpy": "python3-numpy", "pyyaml": "python3-yaml", "opencv-python-headless": "python3-opencv",
               "matplotlib": "python3-matplotlib", "tqdm": "python3-tqdm", "pillow": "python3-pil",
               "pydantic": "python3-pydantic"}
# modules reached through another package's import: module prefix -> the distribution it needs
INDIRECT = {"torch.utils.tensorboard": "tensorboard"}
# used when importable, declared nowhere on purpose (package.xml says why)
OPTIONAL = {"ai2thor"}
IN_REPO = {"rls3_ros", "rls3_msgs"}  # rls3_msgs: the interface package beside this one (<depend>)


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def setup_kwargs() -> dict:
    """What setup.py passes to setup(), by running it (in the repo root) with setup() replaced."""
    code = ("import json, setuptools, sys\n"
            "seen = {}\n"
            "setuptools.setup = lambda **kw: seen.update(kw)\n"
            "exec(compile(open('setup.py').read(), 'setup.py', 'exec'), {'__name__': '__main__'})\n"
            "print(json.dumps({k: seen.get(k) for k in ('data_files', 'package_data', 'install_requires')}))\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_every_data_files_glob_matches_files_and_the_fastdds_profile_is_installed():
    tree = ast.parse((ROOT / "setup.py").read_text())
    globs = [n.args[0].value for n in ast.walk(tree)
             if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "glob" and isinstance(n.args[0], ast.Constant)]
    assert globs, "setup.py has no glob() patterns (the test reads them)"
    for pattern in globs:
        assert sorted(ROOT.glob(pattern)), f"setup.py glob {pattern!r} matches nothing"
    kw = setup_kwargs()
    installed = {}
    for dest, files in kw["data_files"]:
        assert files, f"data_files entry {dest!r} installs no file"
        for f in files:
            assert (ROOT / f).is_file(), f"data_files entry {dest!r} lists {f!r}, which is not a file"
            installed[f] = dest
    assert installed.get("config/fastdds_localhost.xml") == "share/rls3_ros/config"
    assert installed.get("package.xml") == "share/rls3_ros"
    for pkg, patterns in (kw["package_data"] or {}).items():
        base = ROOT / pkg.replace(".", "/")
        for pattern in patterns:
            assert [f for f in base.glob(pattern) if f.is_file()], f"package_data {pkg}: {pattern!r} matches nothing"


def _third_party_imports() -> dict:
    """top-level module -> files of rls3_ros importing it (absolute imports, not stdlib)."""
    found = {}
    for f in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                for prefix, dist in INDIRECT.items():
                    if name == prefix or name.startswith(prefix + "."):
                        found.setdefault(f"dist:{dist}", set()).add(str(f.relative_to(ROOT)))
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in IN_REPO:
                    found.setdefault(top, set()).add(str(f.relative_to(ROOT)))
    return found


def _requirements() -> set:
    names = set()
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            names.add(_norm(re.split(r"[<>=!~\[; ]", line)[0]))
    return names


def _package_xml():
    text = (ROOT / "package.xml").read_text()
    keys = {e.text.strip() for e in ET.fromstring(text) if e.tag.endswith("depend") and e.text}
    m = re.search(r"pip-only \([^)]*\):(.*?)-->", text, re.S)
    assert m, "package.xml has no pip-only list"
    return keys, {_norm(w) for w in m.group(1).split()}


def test_every_third_party_import_is_declared():
    imports = _third_party_imports()
    assert {"numpy", "rclpy", "rosbags", "PIL", "datasets", "dist:tensorboard"} <= set(imports), sorted(imports)
    requirements = _requirements()
    rosdep_keys, pip_only = _package_xml()
    dists_of = packages_distributions()
    problems = []
    for module, files in sorted(imports.items()):
        if module in OPTIONAL:
            continue
        where = sorted(files)[0]
        if module.startswith("dist:"):
            dists = [module[5:]]
        else:
            dists = [_norm(d) for d in dists_of.get(module, [])]
            if not dists and module in rosdep_keys:  # a ROS-distro package with no PyPI wheel (launch)
                continue
            if not dists:
                problems.append(f"{module} (imported by {where}) is not installed here")
                continue
        declared = [d for d in dists if d in requirements]
        if not declared:
            problems.append(f"{module} (imported by {where}): none of {dists} is in requirements.txt")
            continue
        dist = declared[0]
        if dist.startswith("ros-"):  # a ROS package from the PyPI wheels: its own name is the rosdep key
            ok = module in rosdep_keys
        else:
            ok = ROSDEP_KEYS.get(dist) in rosdep_keys or dist in pip_only
        if not ok:
            problems.append(f"{module} (imported by {where}, pip {dist}) is not declared in package.xml")
    assert not problems, "\n".join(problems)


def test_pip_only_list_names_real_requirements():
    _keys, pip_only = _package_xml()
    missing = sorted(pip_only - _requirements())
    assert not missing, f"package.xml pip-only names not in requirements.txt: {missing}"
