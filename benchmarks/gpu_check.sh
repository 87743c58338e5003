#!/usr/bin/env bash
# One command that checks the toolkit on the GPU at hand and prints one table (about 8 minutes on one GPU):
#
#   benchmarks/gpu_check.sh                      # on a machine with a CUDA GPU, from the repository root
#   benchmarks/gpu_check.sh --device cpu         # the same steps on the CPU (small shapes), to see that it runs
#   benchmarks/gpu_check.sh --prepare DIR        # on a machine with the package index: what a machine without
#                                                # one needs (wheels of the pure-Python dependencies) into DIR
#   benchmarks/gpu_check.sh --wheels DIR/wheels  # on that machine: install from them first
#
# Steps: versions and the device; the GPU tests (values against the CPU's float32 under sdpa and flex attention,
# the prefix tree on and off, a 4-bit load, `genies run` under torchrun over nccl); extraction of a LLaMA-7B-shaped
# random-weight model in bfloat16 (computed and useful tokens/s, the fraction of the device's matmul rate, peak
# memory against the weights) with the tree on and off; flex attention's compile time. Each step has its own
# timeout; a failed step is reported and the next one runs. Results land in $WORK (default gpu-check/).
set -u

DEVICE=cuda
WORK=gpu-check
PREPARE=""
WHEELS=""
SHAPE=""
LIMIT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --work) WORK="$2"; shift 2 ;;
    --prepare) PREPARE="$2"; shift 2 ;;
    --wheels) WHEELS="$2"; shift 2 ;;
    --shape) SHAPE="$2"; shift 2 ;;
    --limit) LIMIT="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"

if [ -n "$PREPARE" ]; then
  # Pure-Python wheels of every pinned dependency (torch and its own tree left out, as in the lock): a GPU machine
  # has torch, numpy and the compiled libraries of its image; what it lacks is mostly pure Python.
  mkdir -p "$PREPARE/wheels"
  # the lock's pins less what the check never imports: the docs site, S3 and its test server, notebooks, the
  # bundled Gemma's weights, and what torch brings itself
  grep -E '^[A-Za-z0-9_.-]+==' requirements.lock \
    | grep -viE '^(gemma3|botocore|boto3|s3transfer|aiobotocore|s3fs|moto|cfn-lint|babel|mkdocs|pymdown|backrefs|paginate|sympy|networkx|mpmath|xarray|pandas|pyarrow|datasets|multiprocess|dill|import-linter|grimp|jsonschema|openapi|jsonpath|docker|flask|werkzeug|aws-xray|responses|py-partiql|graphql|joserfc|xmltodict|rfc3339|lazy-object|watchdog|ghp-import|griffe)' \
    > "$PREPARE/requirements.txt"
  "$PYTHON" -m pip download --no-deps --only-binary=:all: -d "$PREPARE/wheels" -r "$PREPARE/requirements.txt" \
    >"$PREPARE/download.log" 2>&1 || echo "some wheels could not be downloaded: $PREPARE/download.log" >&2
  find "$PREPARE/wheels" -name '*.whl' ! -name '*-none-any.whl' -delete
  echo "$(ls "$PREPARE/wheels" | wc -l) wheels, $(du -sh "$PREPARE/wheels" | cut -f1) in $PREPARE/wheels"
  exit 0
fi

if [ -n "$WHEELS" ]; then
  "$PYTHON" -m pip install --no-index --find-links "$WHEELS" --no-deps "$WHEELS"/*.whl >/dev/null 2>&1
  "$PYTHON" -m pip install --no-index --no-deps --no-build-isolation -e . >/dev/null 2>&1 \
    || echo "could not install the repository from $WHEELS; the steps below say what is missing" >&2
fi

if [ "$DEVICE" = "cpu" ]; then
  SHAPE="${SHAPE:-135m}"; LIMIT="${LIMIT:-4}"; export GENIES_DEVICE=cpu
else
  SHAPE="${SHAPE:-7b}"; LIMIT="${LIMIT:-40}"
fi
mkdir -p "$WORK"
export HF_HUB_OFFLINE=1
RESULTS="$WORK/steps.tsv"
: >"$RESULTS"

# step NAME TIMEOUT COMMAND...: runs it, keeps its output in $WORK/NAME.log and its last "RESULT: ..." line
step() {
  local name="$1" limit="$2"; shift 2
  local started=$(date +%s)
  timeout "$limit" "$@" >"$WORK/$name.log" 2>&1
  local rc=$? seconds=$(( $(date +%s) - started ))
  local result=$(grep '^RESULT: ' "$WORK/$name.log" | tail -1 | cut -c9-)
  local status=ok
  [ $rc -eq 124 ] && status="timed out (${limit}s)"
  [ $rc -ne 0 ] && [ $rc -ne 124 ] && status="failed (exit $rc; $WORK/$name.log)"
  [ -z "$result" ] && result=$(tail -1 "$WORK/$name.log" | cut -c1-100)
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$seconds" "$result" >>"$RESULTS"
  echo "[$name] $status in ${seconds}s" >&2
}

step versions 120 "$PYTHON" -c "
import platform, torch, transformers
device = '$DEVICE'
name = torch.cuda.get_device_name(0) if device != 'cpu' and torch.cuda.is_available() else platform.processor() or 'cpu'
print(f'RESULT: torch {torch.__version__}, transformers {transformers.__version__}, '
      f'cuda {torch.version.cuda} (available: {torch.cuda.is_available()}), device {name}')
"

if [ "$DEVICE" = "cpu" ]; then
  printf 'gpu-tests\tskipped\t0\t--device cpu: the gpu-marked tests need CUDA\n' >>"$RESULTS"
else
  step gpu-tests 420 bash -c "'$PYTHON' -m pytest -q -m gpu tests/test_gpu.py tests/test_compute_dtype.py 2>&1 \
    | tee /dev/stderr | tail -1 | sed 's/^/RESULT: /'"
fi

MODEL="$WORK/llama-$SHAPE"
step build-model 600 "$PYTHON" -c "
import sys; sys.path.insert(0, 'benchmarks')
from pathlib import Path
from model_scale import SHAPES, save_random_llama
shape = SHAPES['$SHAPE']
save_random_llama(Path('$MODEL'), shape)
size = sum(f.stat().st_size for f in Path('$MODEL').glob('*.safetensors'))
print(f'RESULT: random LLaMA-$SHAPE shape (hidden {shape.hidden}, {shape.layers} layers), {size / 2**30:.2f} GiB bfloat16')
"

step extract 1200 "$PYTHON" benchmarks/extract_bench.py --model "$MODEL" --data-dir demo --dataset arith_easy \
  --split train --limit "$LIMIT" --device "$DEVICE" --ablations --json-out "$WORK/extract.json"

step flex-compile 600 "$PYTHON" - <<EOF
import time, torch
from actstore.engine.extraction import ExtractConfig, extract
import tempfile, json
from pathlib import Path
device = '$DEVICE'
if device == 'cpu' or not torch.cuda.is_available():
    print('RESULT: flex attention on the CPU: ' + ('not compiled here' if device == 'cpu' else 'no CUDA'))
else:
    with tempfile.TemporaryDirectory() as out:
        seconds = []
        for attempt in range(2):
            started = time.perf_counter()
            extract(ExtractConfig(model='$MODEL', datasets=('arith_easy',), splits=('test',), data_dir='demo',
                                  limit=2, out=f'{out}/{attempt}', attention='flex_attention', progress=False))
            seconds.append(time.perf_counter() - started)
        print(f'RESULT: first extraction {seconds[0]:.1f} s, second {seconds[1]:.1f} s: compile about {seconds[0] - seconds[1]:.1f} s')
EOF

echo
printf 'step\tstatus\tseconds\tresult\n' | cat - "$RESULTS" | column -t -s "$(printf '\t')"
