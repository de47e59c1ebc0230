#!/bin/bash
# The GPU checks of issues 16 and 21 as one prepared script, for a machine with an NVIDIA GPU and
# PyTorch but none of stepforge's other packages (they travel as wheels in .whl/).
#
#   python -m bench.gpu_distill pack runs/en_basic .gpu/en_basic                    # here first
#   python -m bench.gpu_distill variants pipelines/configs/en_basic.yaml .gpu/variants
#   bash bench/device_run.sh check OUT    # a timed, checked distill step (bench/gpu_step.py) -> OUT/timings.json,
#                                         # then serve_load on a random tts-3b-shaped Step1
#   cp OUT/timings.json .gpu/timings.json      # or a step time of your own
#   bash bench/device_run.sh distill OUT    # the variants, steps planned from the timings, each stopped
#                                           # at its deadline with its best held-out export so far
#
# Each part has its own time limit, so one that fails or overruns leaves the others their time.
#
# .whl/ is not in git. Make it here with the venv's versions (`pip show NAME`) of each package:
#   .venv/bin/python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
#       --platform manylinux2014_x86_64 --platform any -d .whl hjson pydantic pydantic_core annotated-types \
#       typing-inspection typing_extensions fastapi starlette uvicorn python-multipart jiwer rapidfuzz soundfile \
#       cffi pycparser soxr sniffio email-validator pydantic-extra-types dnspython annotated-doc librosa pooch \
#       platformdirs decorator audioread          # each as NAME==VERSION
#   DS_BUILD_OPS=0 .venv/bin/python -m pip wheel --no-deps --no-build-isolation deepspeed==0.19.8 -w .whl
# (deepspeed is published as source only; the GPU machine has torch, numpy, httpx, sentencepiece and the rest.)
set -u
MODE=${1:-}
case "$MODE" in check|distill) ;; *) echo "usage: bash bench/device_run.sh check|distill [OUT]" >&2; exit 2;; esac
OUT=${2:-${OUT:-/tmp/device_out}}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
export PYTHONPATH=$PWD:/tmp/site PATH=/tmp/site/bin:$PATH PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, deepspeed, fastapi, uvicorn; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'deepspeed', deepspeed.__version__, 'gpu', torch.cuda.get_device_name())"
start=$(date +%s)
cp -r .gpu /dev/shm/gpu  # the run's token data in memory, whatever the checkout's file system
if [ "$MODE" = check ]; then
    timeout 90 python3 -m bench.gpu_step /dev/shm/gpu/en_basic /dev/shm/gpu/variants/medium.yaml \
        --json "$OUT/gpu_step.json" --timings "$OUT/timings.json"
    echo "gpu_step: rc $? after $(( $(date +%s) - start )) s"
    timeout 120 python3 -m bench.serve_load --preset tts-3b --requests 32 --levels 1,8,32 --max-seconds 1 \
        --skip-decode --json "$OUT/serve_3b.json"
    echo "serve_load: rc $? after $(( $(date +%s) - start )) s"
else  # distill
    # steps planned from the timings; stopped at the deadline with its best held-out export so far
    timeout "${DISTILL_TIMEOUT:-270}" python3 -m bench.gpu_distill train /dev/shm/gpu/en_basic /dev/shm/gpu/variants \
        --out "$OUT" --budget "${DISTILL_BUDGET:-230}" --deadline "${DISTILL_DEADLINE:-230}" \
        --timings /dev/shm/gpu/timings.json --set train.eval_every=100 --set train.save_every=100000
    echo "distill: rc $? after $(( $(date +%s) - start )) s"
fi
