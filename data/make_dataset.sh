#!/usr/bin/env bash
# Label the whole reference dataset into a per-row store, then build the shipped compact file.
# Resumable: rerunning skips every row already in the store. Usage:
#   bash data/make_dataset.sh [STORE (default data/work/labels.db)] [WORKERS (default 2)]
set -euo pipefail
cd "$(dirname "$0")/.."
STORE=${1:-data/work/labels.db}
W=${2:-2}
L="python -m jbo.data label --db $STORE --method fci --basis sto-3g --workers $W --no-progress"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
# 1. the original 146 train parents (H_4..H_8, every subcluster) and 32 held-out totals
$L --split train --sizes 4-8 --regimes low,high --count 4:40,5:20,6:8,7:3,8:2 --seed 0 --subsets all
$L --split heldout --sizes 9-10 --regimes low,high --count 9:7,10:6 --seed 5000 --subsets full
$L --split heldout --sizes 11-12 --regimes high --count 11:4,12:2 --seed 5100 --subsets full
# 2. 100 H_8 parents per regime with every subcluster (reference MBE known)
$L --split train --sizes 8 --regimes low,high --count 100 --seed 20000 --subsets all
# 3. 3 complete H_9 and H_10 parents per regime (held out, decomposed order by order)
$L --split heldout --sizes 9-10 --regimes low,high --count 3 --seed 30000 --subsets all
# 4. the H_8 pool: 2000 full clusters per regime (totals and forces)
$L --split train --sizes 8 --regimes low,high --count 2000 --seed 10000 --subsets full
# 5. the shipped compact file, validated
python -m jbo.data pack --db "$STORE" -o data/h_clusters.npz
python -m jbo.data validate --db data/h_clusters.npz --sample 200
