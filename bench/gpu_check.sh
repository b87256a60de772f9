#!/usr/bin/env bash
# The GPU checks, as one short command for the device machine (a lent H100/H200; CI never
# runs this). That machine has python3.12 with torch, transformers, peft, pyarrow and
# tokenizers but no pydantic and no network, so `make gpu-wheels` first downloads the
# missing wheels into .whl/ here, and the run carries them:
#
#   make gpu-wheels
#   device run: command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=540
#
# What it does (~5 min on an H200, most of it two ~124M GPT-2 runs):
#   1. nvidia-smi and the versions it runs on;
#   2. bench_train on the tiny model (our loop vs the Hugging Face Trainer, now on CUDA),
#      then the ~124M GPT-2 pretraining run in bf16: tokens/s and MFU (target >= 45%);
#   3. the same pretraining run with torch.compile.
# Every result also lands in $OUT (the device tool brings that folder back).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
# snowtrain is one namespace package over the two image folders; bench_train reads tests/.
export PYTHONPATH=.:operator:trainer_image:${PYTHONPATH:-}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
{ nvidia-smi || echo "no nvidia-smi"; } 2>&1 | tee "$OUT/nvidia-smi.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers',
    transformers.__version__, 'cuda', torch.cuda.is_available())" | tee "$OUT/versions.txt"
python3 bench/bench_train.py --model tiny --steps 200 --repeats 2 --gpu-steps 30 \
    --gpu-batch-size 16 2>&1 | tee "$OUT/bench_train.txt"
python3 bench/bench_train.py --model tiny --steps 200 --repeats 2 --gpu-steps 30 \
    --gpu-batch-size 16 --compile 2>&1 | tee "$OUT/bench_train_compile.txt"
