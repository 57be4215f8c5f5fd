#!/usr/bin/env bash
# Reruns one experiment of docs/reproduction.md and copies its small outputs (records, report,
# figures; no checkpoints) into docs/reproduction/<experiment>/.
#
#   scripts/reproduction.sh flowers          # main grid on Oxford Flowers-102 (16 points)
#   scripts/reproduction.sh caltech101       # main grid on Caltech-101 (16 points)
#   scripts/reproduction.sh flowers_l2sp     # L2 against L2-SP at the main grid's best (m, lr)
#   scripts/reproduction.sh caltech101_l2sp
#   scripts/reproduction.sh similarity       # Flowers against Caltech-101 (the EMD is symmetric)
#
# CPU=N pins the run to core N (two grids side by side, one core each, is how the published
# figures were made). A killed grid resumes where it stopped when the command is run again.
set -euo pipefail
cd "$(dirname "$0")/.."
experiment=${1:?usage: scripts/reproduction.sh flowers|caltech101|flowers_l2sp|caltech101_l2sp|similarity}
python=${PYTHON:-.venv/bin/python}
pin=()
if [[ -n "${CPU:-}" ]]; then pin=(taskset -c "$CPU"); fi
out=docs/reproduction

if [[ $experiment == similarity ]]; then
  mkdir -p "$out"
  {
    echo "# python -m jaxft.similarity --config configs/reproduction.py:flowers --source caltech101 --source_data_dir ../shared/data"
    "${pin[@]}" "$python" -m jaxft.similarity --config configs/reproduction.py:flowers \
      --source caltech101 --source_data_dir ../shared/data
  } > "$out/similarity.txt"
  cat "$out/similarity.txt"
  exit 0
fi

workdir=runs/reproduction/$experiment
"${pin[@]}" "$python" -m jaxft.main --config "configs/reproduction.py:$experiment" \
  --workdir "$workdir"
rm -rf "${out:?}/$experiment"
mkdir -p "$out/$experiment"
cp "$workdir"/results.jsonl "$workdir"/results.csv "$workdir"/report.md "$out/$experiment/"
cp -r "$workdir"/figures "$out/$experiment/"
echo "copied the records, report and figures to $out/$experiment"
