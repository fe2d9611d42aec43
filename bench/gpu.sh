#!/usr/bin/env bash
# The GPU checks, on one CUDA GPU, in under 10 minutes, in the order of what they still have to
# tell: the CUDA tests; TarFlow small's KV-cache sampling replayed from CUDA graphs; TarFlow at
# the ImageNet-64 recipe's width (training, and KV-cache sampling in images/s from CUDA graphs
# and eagerly, timed on one of the eight blocks: a whole eager batch of 16 took over 115 s on an
# H200); vocoder synthesis of about 10 s of audio (880 mel frames, the length of the published
# kHz figures) from a CUDA graph in fp32 and fp16; the command line on CUDA (a tiny recipe
# trained under bf16 autocast, resumed, trained again under torchrun's DDP, then synthesis and
# evaluation at --dtype auto); then the figures an H200 has given before: synthesis of about 1 s
# (WaveFlow h16-r64, NanoFlow h16-r128-emb512, WaveGlow) from a graph in fp32, bf16 and fp16,
# training throughput under bf16 autocast, TarFlow small and Glow eagerly, and eager synthesis.
# Each step has its own time limit, cut to what is left of the whole run's budget (GPU_BUDGET_S,
# default 560 s); a step with under 20 s left is skipped. A failed step does not stop the
# others: the script lists the failed and skipped steps at the end and exits non-zero if any
# failed. Writes the log of every step to $OUT/log.txt (or bench-gpu/log.txt) as it goes and
# prints it.
#
#   bash bench/gpu.sh
#
# Where torch is installed but sharedflow's other dependencies are not (a bare GPU image with no
# network), put their wheels in .whl/ first (pip download --no-deps hydra-core omegaconf
# antlr4-python3-runtime librosa soundfile cffi pycparser soxr audioread pooch platformdirs
# decorator pystoi); they are installed into /tmp/site, and sharedflow is used from this
# checkout.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench-gpu}"
mkdir -p "$out"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
sf() { python3 -m sharedflow.cli "$@"; }
budget=${GPU_BUDGET_S:-560}
failed=()
skipped=()

# step NAME SECONDS COMMAND...: run one check under a time limit (at most what is left of the
# budget), append its output to $out/log.txt.
step() {
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS left=$((budget - SECONDS))
    if [ "$left" -lt 20 ]; then
        echo "-- $name: skipped, ${left} s left of the ${budget} s budget" | tee -a "$out/log.txt"
        skipped+=("$name")
        return
    fi
    [ "$limit" -le "$left" ] || limit=$left
    echo "== $name" | tee -a "$out/log.txt"
    timeout "$limit" "$@" 2>&1 | tee -a "$out/log.txt"
    local rc=${PIPESTATUS[0]}
    echo "-- $name: rc $rc in $((SECONDS - start)) s" | tee -a "$out/log.txt"
    [ "$rc" = 0 ] || failed+=("$name (rc $rc)")
}

cli() {
    local run=/tmp/sharedflow-gpu/run
    rm -rf /tmp/sharedflow-gpu
    set -e
    sf train audio/waveflow-tiny trainer.device=cuda trainer.precision=bf16 \
        trainer.max_steps=40 trainer.ckpt_every=20 trainer.progress=false run_dir=$run
    sf train audio/waveflow-tiny trainer.device=cuda trainer.precision=bf16 \
        trainer.max_steps=60 trainer.ckpt_every=20 trainer.progress=false run_dir=$run
    python3 -m torch.distributed.run --standalone --nproc_per_node 1 -m sharedflow.cli train \
        audio/waveflow-tiny trainer.device=cuda trainer.max_steps=20 trainer.progress=false \
        run_dir=/tmp/sharedflow-gpu/ddp
    sf synthesize $run "$run"/samples/*.wav --device cuda --out /tmp/sharedflow-gpu/syn
    sf evaluate $run --device cuda --max-items 2
    sf train image/tarflow-tiny trainer.device=cuda trainer.precision=bf16 \
        trainer.max_steps=20 trainer.progress=false run_dir=/tmp/sharedflow-gpu/tarflow
    sf sample /tmp/sharedflow-gpu/tarflow --device cuda --n 8 --out "$out/tarflow-tiny-cuda.png"
}

step gpu 60 bash -c "nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; \
    python3 -c \"import torch; assert torch.cuda.is_available(), 'no CUDA device'; \
print(torch.cuda.get_device_name(), 'torch', torch.__version__, 'CUDA', torch.version.cuda)\""
step cuda-tests 120 python3 -m pytest -q -x -p no:cacheprovider -n 0 -k cuda tests

step image-small-graph 90 python3 bench/image.py --device cuda --graph --repeats 5
for mode in --graph ""; do  # one block of eight: replayed from CUDA graphs, then eagerly
    step "tarflow-imagenet64-bf16${mode:+-graph}" 120 python3 bench/image.py --device cuda \
        $mode --preset imagenet64 --precision bf16 --batch 16 --repeats 1
done
for dtype in fp32 fp16; do  # about 10 s of audio: the length the published kHz figures used
    step "synth-$dtype-graph-880-frames" 90 python3 bench/audio.py --device cuda --what synth \
        --graph --dtype "$dtype" --frames 880 --repeats 5 --models waveflow-h16-r64 waveglow
done
export -f sf cli
export out
step cli 120 bash -c cli

models="waveflow-h16-r64 nanoflow-h16-r128-emb512 waveglow"
for dtype in fp32 bf16 fp16; do
    step "synth-$dtype-graph" 90 python3 bench/audio.py --device cuda --what synth --graph \
        --dtype "$dtype" --repeats 5 --models $models
done
step train-bf16 90 python3 bench/audio.py --device cuda --what train --precision bf16 \
    --batch 8 --repeats 5 --models $models
step image-small-eager 60 python3 bench/image.py --device cuda --repeats 5
for dtype in fp32 bf16; do
    step "synth-$dtype-eager" 60 python3 bench/audio.py --device cuda --what synth \
        --dtype "$dtype" --repeats 3 --models waveflow-h16-r64 waveglow
done

echo "== failed: ${failed[*]:-none}; skipped for time: ${skipped[*]:-none}" | tee -a "$out/log.txt"
[ ${#failed[@]} = 0 ]
