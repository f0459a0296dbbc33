#!/usr/bin/env bash
# Build ros2_ws/src/svrl_interfaces into the virtual environment with CMake, using only the ROS 2
# wheels from PyPI (no ROS install). The venv itself is the ament/CMake prefix, so the generated
# messages import with no environment variables afterwards.
#
# Idempotent: skipped when the interface sources are unchanged since the last successful build
# and the package still imports.
set -euo pipefail

VENV="${1:-.venv}"
PKG_SRC="ros2_ws/src/svrl_interfaces"
BUILD_DIR="build/svrl_interfaces"
STAMP="$VENV/.svrl_interfaces.sha256"
VENV="$(cd "$VENV" && pwd)"
PY="$VENV/bin/python"

src_hash="$(find "$PKG_SRC" -type f \( -name '*.msg' -o -name '*.srv' -o -name '*.action' -o -name 'CMakeLists.txt' -o -name 'package.xml' \) -print0 \
    | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$src_hash" ]] \
    && "$PY" -c "from svrl_interfaces.action import ExecuteInstruction" 2>/dev/null; then
    echo "svrl_interfaces: up to date"
    exit 0
fi

# The wheels' CMake exports name the wheel build host's Python include dirs (/opt/python/cp3XX-...).
# Point them at this interpreter's. Safe to repeat: once rewritten, nothing matches any more (and grep's
# exit status 1 for "no match" must not end the script: a rebuild after an interface change comes here too).
PYINC="$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['include'])")"
NPINC="$("$PY" -c "import numpy; print(numpy.get_include())")"
{ grep -rl '/opt/python/cp3' "$VENV/share" --include='*.cmake' 2>/dev/null || true; } | xargs -r sed -i -E \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_core/include#${NPINC}#g" \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#${PYINC}#g"

mkdir -p "$(dirname "$BUILD_DIR")"
echo "svrl_interfaces: building into $VENV (about a minute on 2 cores)"
export PATH="$VENV/bin:$PATH" AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"
cmake -S "$PKG_SRC" -B "$BUILD_DIR" -DCMAKE_INSTALL_PREFIX="$VENV" -DPython3_EXECUTABLE="$PY" \
    -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release >"$BUILD_DIR.configure.log" 2>&1 \
    || { cat "$BUILD_DIR.configure.log"; exit 1; }
cmake --build "$BUILD_DIR" -j"$(nproc)" >"$BUILD_DIR.build.log" 2>&1 || { tail -50 "$BUILD_DIR.build.log"; exit 1; }
cmake --install "$BUILD_DIR" >/dev/null
"$PY" -c "from svrl_interfaces.action import ExecuteInstruction; from svrl_interfaces.msg import ActionChunk; \
from svrl_interfaces.srv import SetMode, ResetEpisode, StepSim, StepChunk"
echo "$src_hash" >"$STAMP"
echo "svrl_interfaces: built and importable"
