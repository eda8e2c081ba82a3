#!/usr/bin/env bash
# Issue #6's GPU measurement as ONE command on a lent GPU machine (device tool), so the session's
# 15 minutes go to measuring. That machine's image has torch, numba, numba-cuda and networkx but
# not lark. Once, here, in the repo root (lark is pure Python):
#     echo /.whl/ >> .git/info/exclude && python -m pip download --no-deps -d .whl "lark==$(python -c 'import lark; print(lark.__version__)')"
# then: run(command="bash bench/gpu_device.sh", carry=[".whl"], timeout_s=450)
# It writes $OUT/gpu.txt (device, driver, versions), $OUT/bench_gpu.json (rewritten after every
# network) and $OUT/bench_gpu.log. DEADLINE (seconds, default 330) stops starting new networks
# so the command ends inside the call with time to spare: a machine start takes 1-2 of the
# session's 15 device minutes, and a second call on the still-warm machine (it stays ~30 s)
# should fit if the first one shows a fixable problem. Kernels compile in one process per core.
# Arguments go to bench/gpu.py: a second call such as `bash bench/gpu_device.sh --sgemm 0
# --batches 32 --models resnet50 --tune` measures autotuned tiles against the default ones.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/netc_gpu_out}
mkdir -p "$OUT" /tmp/site
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
fi
ln -sfn "$PWD" /tmp/site/netc          # the repo root is the netc package (pyproject's package-dir)
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 NETC_CACHE=/tmp/netc_cache
{
  nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem,memory.total --format=csv
  python3 - <<'EOF'
import platform, numba, torch
from numba import cuda
import numba_cuda, lark, netc
dev = cuda.get_current_device()
print("python", platform.python_version(), "numba", numba.__version__, "numba-cuda", numba_cuda.__version__,
      "torch", torch.__version__, "lark", lark.__version__)
print("numba device", dev.name, "cc", dev.compute_capability, "SMs", dev.MULTIPROCESSOR_COUNT,
      "cuda runtime", cuda.runtime.get_version())
EOF
} 2>&1 | tee "$OUT/gpu.txt"
python3 bench/gpu.py --json "$OUT/bench_gpu.json" --deadline-s "${DEADLINE:-330}" "$@" 2>&1 | tee "$OUT/bench_gpu.log"
exit "${PIPESTATUS[0]}"
