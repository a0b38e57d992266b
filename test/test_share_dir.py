"""The one lookup of the package's data files (``rls3_ros.core.share_dir``): the source tree first,
then ``<prefix>/share/rls3_ros`` of each ``$AMENT_PREFIX_PATH`` prefix, then of ``sys.prefix``."""

import sys
from pathlib import Path

from rls3_ros.core import share_dir

REPO = Path(__file__).resolve().parent.parent


def _installed(prefix: Path, *parts: str) -> Path:
    p = prefix.joinpath("share", "rls3_ros", *parts)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("x")
    return p


def test_the_source_tree_comes_before_any_install(tmp_path, monkeypatch):
    _installed(tmp_path, "config", "train.yaml")
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path))
    assert share_dir.SOURCE_ROOT == REPO
    assert share_dir.find_data("config", "train.yaml") == REPO / "config" / "train.yaml"
    assert share_dir.package_roots()[:2] == [REPO, tmp_path / "share" / "rls3_ros"]


def test_installed_data_is_found_in_ament_prefix_order_then_sys_prefix(tmp_path, monkeypatch):
    first, second = tmp_path / "ws1" / "install", tmp_path / "ws2" / "install"
    only_second = _installed(second, "models", "only_here", "config.json")
    _installed(first, "models", "both", "config.json")
    _installed(second, "models", "both", "config.json")
    monkeypatch.setenv("AMENT_PREFIX_PATH", f"{first}:{tmp_path / 'missing'}:{second}")
    assert share_dir.share_dirs()[:2] == [first / "share", second / "share"]
    assert share_dir.share_dirs()[-1] == Path(sys.prefix) / "share"
    assert share_dir.find_data("models", "only_here", "config.json") == only_second
    assert share_dir.find_data("models", "both") == first / "share" / "rls3_ros" / "models" / "both"
    assert share_dir.find_data("models", "nowhere") is None
    # not found anywhere: the source tree's path, so an error names where it was expected
    assert share_dir.data_path("models", "nowhere") == REPO / "models" / "nowhere"


def test_every_module_that_needs_package_data_uses_the_one_lookup():
    from rls3_ros.bags.typestore import share_dirs
    from rls3_ros.loop.config_files import _config_file
    from rls3_ros.ros.isolation import FASTDDS_PROFILE
    from rls3_ros.ros.launcher import config_dir
    from rls3_ros.vlm.model_dirs import default_dirs

    assert share_dirs is share_dir.share_dirs
    assert _config_file() == str(REPO / "config" / "train.yaml")
    assert FASTDDS_PROFILE == REPO / "config" / "fastdds_localhost.xml"
    assert config_dir() == str(REPO / "config")
    assert default_dirs("grounded")[1:] == [r / "models" / "grounded" for r in share_dir.package_roots()]
    for mod in ("bags/typestore.py", "loop/config_files.py", "ros/isolation.py", "ros/launcher.py", "vlm/model_dirs.py"):
        text = (REPO / "rls3_ros" / mod).read_text()
        assert "get_package_share_directory" not in text and "parents[2]" not in text, mod
