#!/usr/bin/env bash
# Installs MMGA and its dependencies into a virtual environment (default: .venv).
#
#   bash scripts/install.sh            # runtime dependencies
#   bash scripts/install.sh --test     # plus pytest and ruff
#
# Order matters: torch first, then torch-scatter/torch-sparse built against *that* torch
# (they are source-only on PyPI; the first build takes about 5 minutes on 2 cores with the precompiled
# torch headers of scripts/pch-g++, later installs reuse pip's wheel cache), then the project itself.
# GPU users: set TORCH_SPEC to the CUDA build you want, e.g.
#   TORCH_SPEC="torch==2.5.1 torchvision==0.20.1" TORCH_INDEX=https://download.pytorch.org/whl/cu124 bash scripts/install.sh
# and torch-scatter/torch-sparse will be compiled against it (or install their prebuilt wheels from
# https://data.pyg.org/whl/ first; this script keeps them when they load).
set -euo pipefail

VENV=${VENV:-.venv}
SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
EXTRAS=""
[ "${1:-}" = "--test" ] && EXTRAS="[test]"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install --quiet --upgrade pip setuptools wheel

pip_torch=(python -m pip install)
[ -n "${TORCH_INDEX:-}" ] && pip_torch+=(--index-url "$TORCH_INDEX")
# shellcheck disable=SC2086
"${pip_torch[@]}" $TORCH_SPEC
echo "torch installed after ${SECONDS} s"

ext_ok() {
    python - <<'PY' 2>/dev/null
import torch, torch_scatter, torch_sparse  # noqa: F401
row = torch.tensor([0, 1]); col = torch.tensor([1, 0])
a = torch_sparse.SparseTensor(row=row, col=col, sparse_sizes=(2, 2))
assert torch.equal(a.matmul(torch.ones(2, 1)), torch.ones(2, 1))
PY
}

build_extensions() {
    # Two things put both cores to work: the two packages build at the same time, and within a package either
    # ninja (torch-sparse uses it when it is on PATH; it compiles an extension's files at once, MAX_JOBS) or
    # setuptools' parallel build_ext (DIST_EXTRA_CONFIG) compiles several files at once. The second only where
    # ninja is not used: torch's ninja backend writes one build.ninja per package build folder, so extensions
    # built in parallel overwrite each other's and the link fails ("cannot find ..._cpu.o"; torch-scatter sets
    # use_ninja=False, torch-sparse does not). -g0 drops the debug info that Python's CFLAGS ask for: the linker
    # strips it anyway (-s), so it only costs compile time. Both CFLAGS and CXXFLAGS carry it: setuptools (84 here)
    # compiles C++ sources with CXXFLAGS and lets either variable *replace* Python's flags rather than add to them,
    # and torch's ninja backend takes the C flags. So each is Python's own flags (-DNDEBUG -O3 -Wall ...) without
    # -fwrapv, plus -g0, or yours where you set them. -fwrapv (defined signed overflow) made torch-sparse's SpMM
    # 2.3x slower forward+backward (60,000 nodes, 1.2 million entries: 130-138 ms against 55-58 ms; README).
    # With GCC (and CC/CXX not set), scripts/pch-g++
    # compiles the torch headers that every source file includes once, as a precompiled header, and each compile
    # reads that instead of parsing them again (about a third of each file's compile time; MMGA_NO_PCH=1 turns
    # it off).
    local cache_flag=("$@") wheels cfg pids=() rc=0 pkg config pch="" compiler_env=() python_flags
    python_flags=$(python -c 'import sysconfig; print(" ".join(f for f in (sysconfig.get_config_var("CFLAGS") or "").split() if f != "-fwrapv"))')
    wheels=$(mktemp -d)
    cfg=$(mktemp)
    printf '[build_ext]\nparallel = %s\n' "$MAX_JOBS" >"$cfg"
    if [ -z "${MMGA_NO_PCH:-}" ] && [ -z "${CC:-}" ] && [ -z "${CXX:-}" ] && g++ -v 2>&1 | grep -q '^gcc version'; then
        pch=$(mktemp -d)
        compiler_env=(CC="$SCRIPTS/pch-g++" CXX="$SCRIPTS/pch-g++" MMGA_PCH_DIR="$pch")
    fi
    for pkg in torch-scatter==2.1.2 torch-sparse==0.6.18; do
        config=$cfg
        if [ "$pkg" = torch-sparse==0.6.18 ] && ninja --version >/dev/null 2>&1; then
            config=/dev/null
        fi
        env ${compiler_env[@]+"${compiler_env[@]}"} DIST_EXTRA_CONFIG="$config" \
            CFLAGS="${CFLAGS:-$python_flags} -g0" CXXFLAGS="${CXXFLAGS:-${CFLAGS:-$python_flags}} -g0" \
            python -m pip wheel --quiet --no-deps --no-build-isolation "${cache_flag[@]}" -w "$wheels" "$pkg" &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
    [ "$rc" = 0 ] && python -m pip install --quiet --no-deps --force-reinstall "$wheels"/*.whl || rc=1
    rm -rf "$wheels" "$cfg" ${pch:+"$pch"}
    return "$rc"
}

if ext_ok; then
    echo "torch-scatter/torch-sparse already load against $(python -c 'import torch; print(torch.__version__)')"
else
    echo "Building torch-scatter and torch-sparse against the installed torch (first time: several minutes)..."
    # Build dependencies must be present when build isolation is off.
    python -m pip install --quiet -c requirements/constraints.txt scipy
    export MAX_JOBS=${MAX_JOBS:-$(nproc)}
    t0=$SECONDS
    build_extensions
    if ! ext_ok; then
        # pip's wheel cache keys on the source package, not on the torch it was built against:
        # a wheel cached for another torch installs and then fails with 'undefined symbol'.
        echo "Cached torch-sparse/torch-scatter wheels do not match this torch; rebuilding without the cache..."
        python -m pip uninstall -y torch-scatter torch-sparse
        build_extensions --no-cache-dir
        ext_ok || { echo "ERROR: torch-sparse still fails to load; see the messages above." >&2; exit 1; }
    fi
    echo "torch-scatter and torch-sparse built in $((SECONDS - t0)) s"
fi

python -m pip install -c requirements/constraints.txt -e ".${EXTRAS}"
python -m pip check || true
python - <<'PY'
import torch, torch_sparse, open_clip, transformers, lightning, h5py
print(f"MMGA environment ready: torch {torch.__version__}, torch-sparse {torch_sparse.__version__}, "
      f"open_clip {open_clip.__version__}, transformers {transformers.__version__}, lightning {lightning.__version__}")
PY
