#!/usr/bin/env bash
# The GPU benchmarks in one call, under 8 minutes on one H100/H200 (docs/benchmarks.md records the output):
#
#   bash benchmarks/gpu.sh [OUT_DIR]        # OUT_DIR: where the logs go (default: $OUT, else ./gpu-out)
#
# 1. equality on the GPU: the chunked head, packing (torch's varlen_attn) and bf16 against the plain
#    path (pytest -m gpu, the trainer's tests only: no Django needed);
# 2. DPO on a Llama-3.2-1B-shaped random model (128k vocabulary), bf16: ours vs TRL on the realistic
#    shape, ours on the equal shape (MFU), each in its own process;
# 3. LoRA on a Llama-3.1-8B-shaped random model: 8 pairs x 2,048 tokens on one GPU, ours;
# 4. a bf16 training run of the trainer end to end (python -m training.dpo: reference pass, steps,
#    atomic final checkpoint) and the same under FSDP on every GPU present (torchrun --sharding fsdp);
# 5. generation: batched (prefill once) against one prompt at a time and the naive loop.
#
# The machine has torch + CUDA, transformers and peft; TRL and its dependencies come from .wheels/ if
# present (pip download --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64
# -d .wheels trl==1.16.0 datasets accelerate pytest), else the TRL rows (and the tests without pytest)
# are skipped and say so.
set -u
OUT_DIR=${1:-${OUT:-gpu-out}}
mkdir -p "$OUT_DIR"
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python3}
log() { echo "== $* ($(date +%T))" | tee -a "$OUT_DIR/summary.txt"; }
run() {  # run NAME SECONDS COMMAND...: a step with its own time limit; its output in OUT_DIR/NAME.txt
  local name=$1 limit=$2; shift 2
  log "$name: $*"
  timeout "$limit" "$@" >"$OUT_DIR/$name.txt" 2>&1
  local rc=$?
  tail -n 12 "$OUT_DIR/$name.txt" | tee -a "$OUT_DIR/summary.txt"
  echo "rc=$rc" | tee -a "$OUT_DIR/summary.txt"
}

nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT_DIR/summary.txt"
$PY -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' \
  | tee -a "$OUT_DIR/summary.txt"
if [ -d .wheels ]; then $PY -m pip install --no-index --find-links .wheels -q trl datasets accelerate pytest 2>&1 | tail -2; fi
$PY -c 'import trl' 2>/dev/null && TRL=1 || { TRL=0; log "TRL not importable: ours only"; }
$PY -m pip install -q --no-index gguf safetensors 2>/dev/null || true

GPUS=$(nvidia-smi -L | wc -l)
WORK=$(mktemp -d /tmp/prefloop-gpu-XXXX)
$PY benchmarks/gpu_models.py "$WORK" | tee -a "$OUT_DIR/summary.txt"  # random llama-1b / llama-8b + tokenizer

if $PY -c 'import pytest' 2>/dev/null; then
  run gpu-tests 90 $PY -m pytest -q --noconftest -m gpu tests/training/dpo/test_gpu.py
else
  log "pytest not importable: the GPU tests are skipped"
fi
if [ "$TRL" = 1 ]; then ONLY=(--only ours --only trl-precomputed); else ONLY=(--only ours); fi
run dpo-1b-realistic 150 $PY benchmarks/dpo.py --model "$WORK/llama-1b" --shape realistic --pairs 32 --batch-size 4 "${ONLY[@]}"
run dpo-1b-equal 60 $PY benchmarks/dpo.py --model "$WORK/llama-1b" --shape equal --pairs 64 --batch-size 8 \
  --prompt-tokens 512 --response-tokens 512 --only ours
run dpo-8b-lora 120 $PY benchmarks/dpo.py --model "$WORK/llama-8b" --shape equal --pairs 8 --batch-size 8 \
  --prompt-tokens 1024 --response-tokens 1024 --lora-r 16 --gradient-checkpointing --only ours
$PY benchmarks/dpo.py --write-pairs "$WORK/pairs.jsonl" --model "$WORK/llama-1b" --shape realistic --pairs 32 >/dev/null
run round-bf16 60 $PY -m training.dpo --data "$WORK/pairs.jsonl" --model "$WORK/llama-1b" --out "$WORK/round" \
  --dtype bf16 --lr 1e-6 --batch-size 4 --max-length 2048
ls "$WORK/round/final" | tee -a "$OUT_DIR/summary.txt"
run fsdp 60 torchrun --standalone --nproc_per_node="$GPUS" -m training.dpo --data "$WORK/pairs.jsonl" \
  --model "$WORK/llama-1b" --out "$WORK/fsdp" --dtype bf16 --lr 1e-6 --batch-size 2 --sharding fsdp
ls "$WORK/fsdp/final" | tee -a "$OUT_DIR/summary.txt"
run logps-memory 30 $PY benchmarks/logps_memory.py --hidden 2048 --positions 2048 8192 16384
run generation 60 $PY benchmarks/generation.py --model "$WORK/llama-1b"
log done
