#!/usr/bin/env bash
# The GPU checks, on one CUDA GPU, in under 10 minutes: the CUDA tests, vocoder synthesis in kHz
# (WaveFlow h16-r64, NanoFlow h16-r128-emb512, WaveGlow) in fp32, bf16 and fp16 replayed from a
# CUDA graph, vocoder training throughput under bf16 autocast, and TarFlow at the ImageNet-64
# recipe's width (training and KV-cache sampling, images/s). Writes every table to $OUT (or
# bench-gpu/) and prints it.
#
#   bash bench/gpu.sh
#
# Where torch is installed but sharedflow's other dependencies are not (a bare GPU image with no
# network), put their wheels in .whl/ first (pip download --no-deps hydra-core omegaconf
# antlr4-python3-runtime librosa soundfile soxr audioread pooch ...); they are installed into
# /tmp/site, and sharedflow is used from this checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench-gpu}"
mkdir -p "$out"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; \
print(torch.cuda.get_device_name(), 'torch', torch.__version__, 'CUDA', torch.version.cuda)" \
    | tee "$out/gpu.txt"

timeout 150 python3 -m pytest -q -x -n 0 -k cuda tests 2>&1 | tail -5 | tee "$out/cuda-tests.txt"

models="waveflow-h16-r64 nanoflow-h16-r128-emb512 waveglow"
for dtype in fp32 bf16 fp16; do
    timeout 100 python3 bench/audio.py --device cuda --what synth --graph --dtype "$dtype" \
        --repeats 5 --models $models | tee "$out/synth-$dtype.md"
done
timeout 120 python3 bench/audio.py --device cuda --what train --precision bf16 --batch 8 \
    --repeats 5 --models $models | tee "$out/train-bf16.md"
timeout 150 python3 bench/image.py --device cuda --preset imagenet64 --precision bf16 \
    --batch 16 --repeats 2 | tee "$out/tarflow-imagenet64-bf16.md"
