#!/usr/bin/env bash
# The GPU checks, as one short command for the device machine (a lent H100/H200; CI never
# runs this). That machine has python3.12 with torch, transformers, peft, pyarrow and
# tokenizers but no pydantic and no network, so `make gpu-wheels` first downloads the
# missing wheels into .whl/ here, and the run carries them:
#
#   make gpu-wheels
#   device run: command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=540
#
# What it does (~5 min on an H200; most of it torch.compile and the ~124M GPT-2 runs):
#   1. nvidia-smi and the versions it runs on;
#   2. bench_mfu: the gpt2 base preset (~124M) pretraining in bf16, batch 16 and 32, eager
#      and compiled: steady-state tokens/s, MFU (target >= 45%), peak memory, syncs per step,
#      and the ratio to a Hugging Face Trainer on the same model and batch;
#   3. bench_loss: the causal-LM loss of a 16 x 1024 batch over the GPT-2 vocabulary, ours vs
#      transformers' (peak memory and time, same value);
#   4. bench_train on the tiny model: our loop vs the Hugging Face Trainer, now on CUDA.
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
# The MFU run first: it is the one number only this machine can give.
python3 bench/bench_mfu.py 2>&1 | tee "$OUT/bench_mfu.txt"
python3 -m bench.bench_loss --tokens 16384 2>&1 | tee "$OUT/bench_loss.txt"
python3 bench/bench_train.py --model tiny --steps 200 --repeats 2 2>&1 | tee "$OUT/bench_train.txt"
