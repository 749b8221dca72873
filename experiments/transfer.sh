#!/usr/bin/env bash
# Transfer learning on Fashion-MNIST, the lecture's last slide as an experiment:
# pretrain the default CNN on classes 0-4 (T-shirt, Trouser, Pullover, Dress, Coat), then
# learn classes 5-9 (Sandal, Shirt, Sneaker, Bag, Ankle boot) from a small budget of
# images, three ways with the same data and epochs:
#   scratch     a fresh model trained on the new classes
#   head        the pretrained features frozen, a new classifier head trained
#   fc          the pretrained conv layers frozen, the whole classifier (both FC layers) trained
# Usage: experiments/transfer.sh [CNNKIT] [OUT]   (default: .venv/bin/cnnkit, runs/transfer)
# Writes OUT/results.md. Every run uses seed 0.
set -euo pipefail
CNNKIT=${1:-.venv/bin/cnnkit}
OUT=${2:-runs/transfer}
mkdir -p "$OUT"
acc() { tail -1 "$1" | awk '{print $3}'; }
common="--no-progress --seed 0"

$CNNKIT train --classes 0-4 --epochs 5 --out "$OUT/pretrain" $common | tee "$OUT/pretrain.log"
{
  echo "| target images (classes 5-9) | epochs | scratch | head only | FC layers |"
  echo "|---:|---:|---:|---:|---:|"
} > "$OUT/results.md"
for limit in 500 2000 0; do
  for way in scratch head fc; do
    log="$OUT/$way-$limit.log"
    case $way in
      scratch) $CNNKIT train --classes 5-9 --limit $limit --val 0 --epochs 5 --out "$OUT/$way-$limit" $common > "$log" ;;
      head)    $CNNKIT finetune "$OUT/pretrain/last.json" --classes 5-9 --limit $limit --val 0 --epochs 5 --lr 0.05 --out "$OUT/$way-$limit" $common > "$log" ;;
      fc)      $CNNKIT finetune "$OUT/pretrain/last.json" --classes 5-9 --limit $limit --val 0 --epochs 5 --lr 0.05 --unfreeze classifier --out "$OUT/$way-$limit" $common > "$log" ;;
    esac
  done
  n=$([ "$limit" = 0 ] && echo "all (30,000)" || echo "$limit")
  echo "| $n | 5 | $(acc "$OUT/scratch-$limit.log") | $(acc "$OUT/head-$limit.log") | $(acc "$OUT/fc-$limit.log") |" >> "$OUT/results.md"
done
echo "pretrain (classes 0-4) test accuracy: $(acc "$OUT/pretrain.log")" >> "$OUT/results.md"
cat "$OUT/results.md"
