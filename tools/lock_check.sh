#!/usr/bin/env bash
# Does requirements.lock install beside every torch build a user may have? pip's dry-run resolution of the
# lock plus torch (nothing is installed; it reads the package index):
#   - the CPU torch this machine's pip sources serve (a local wheelhouse, or the PyTorch CPU index when pip is
#     configured with it), for this machine's Python;
#   - the CUDA torch the package index serves for Linux x86_64 (pip --isolated: the index alone), newest and
#     the version the Makefile installs, for each Python the lock is meant for.
# Prints one line per case and a closing count; exits 1 when any case does not resolve.
# Usage: tools/lock_check.sh [PYTHON]   (make lock-check)
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${1:-python3}"
TORCH_PIN="${TORCH_PIN:-2.13.0}"
PYTHONS="${LOCK_CHECK_PYTHONS:-3.11.9 3.12.10}"  # a micro version: some wheels want 3.11.5 or later
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
platforms=()
for v in $(seq 28 -1 5); do platforms+=(--platform "manylinux_2_${v}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
passed=0 failed=0

resolve() {  # label, then pip arguments
    local label="$1"; shift
    local report="$scratch/report.json"
    rm -f "$report"
    if "$PY" -m pip install --dry-run --ignore-installed --quiet --disable-pip-version-check --report "$report" \
            -r requirements.lock "$@" > "$scratch/log" 2>&1; then
        local torch
        torch="$("$PY" - "$report" <<'PYTHON'
import json, re, sys
report = json.load(open(sys.argv[1]))
torch = next((i["metadata"] for i in report["install"] if i["metadata"]["name"] == "torch"), None)
build = sorted({re.split(r"[ ;<>=!~\[(]", d)[0] for d in (torch or {}).get("requires_dist", [])
                if d.startswith(("nvidia-nccl", "triton"))})
print(f"{torch['version']} ({', '.join(build)})" if torch else "?")
PYTHON
)"
        printf '%-52s resolves: torch %s\n' "$label" "$torch"
        passed=$((passed + 1))
    else
        printf '%-52s FAILS: %s\n' "$label" "$(grep -E "ERROR|error" "$scratch/log" | tail -1)"
        failed=$((failed + 1))
    fi
}

local_python="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
resolve "CPU torch==$TORCH_PIN (this machine's sources), Python $local_python" --target "$scratch/t" "torch==$TORCH_PIN"
for python in $PYTHONS; do
    for torch in torch "torch==$TORCH_PIN"; do
        resolve "CUDA $torch (the index, Linux x86_64), Python $python" --isolated --target "$scratch/t" \
            --only-binary=:all: "${platforms[@]}" --python-version "$python" --implementation cp "$torch"
    done
done
echo "lock-check: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
