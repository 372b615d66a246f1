#!/usr/bin/env bash
# Reproduction against the S3Rec authors on Beauty (README, "Reproduction"): finetuning arms of
# SASRec (`none`) and of the authors' released checkpoint, one single-threaded run at a time.
# Runs are resumable and skipped once their metrics.json exists, so the script can be stopped
# and started again. Summarise with: python benchmarks/reproduction_table.py OUT
#
#   bash benchmarks/reproduction.sh OUT [ARM ...]     (default OUT: results/reproduction)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-results/reproduction}; shift || true
data=$out/resources/beauty
shared=../shared
[ -f "$data/stats.json" ] || python scripts/prepare_data.py --format s3rec --sequences $shared/data/s3rec/Beauty.txt \
    --attributes $shared/data/s3rec/Beauty_item2attributes.json --out "$data"
[ -f "$out/authors/pretrain.pt" ] || python scripts/import_checkpoint.py --authors $shared/authors/Beauty-epochs-150.pt \
    --data "$data" --out "$out/authors/pretrain.pt" --variant authors

bucketed10='{"finetune": {"batching": "bucketed", "early_stopping_metric": "NDCG@10"}}'
# arm: variant, settings (defaults: padded batches, early stopping on NDCG@20, bce)
declare -A variant=(
  [none_padded_ndcg20]=none [none_bucketed_ndcg10]=none [none_bucketed_ndcg20]=none [none_padded_ndcg10]=none
  [authors_bce]=authors [authors_ce]=authors [none_authors_negatives]=none)
declare -A settings=(
  [none_padded_ndcg20]='{}' [none_bucketed_ndcg10]=$bucketed10
  [none_bucketed_ndcg20]='{"finetune": {"batching": "bucketed"}}'
  [none_padded_ndcg10]='{"finetune": {"early_stopping_metric": "NDCG@10"}}'
  [authors_bce]='{}' [authors_ce]='{"finetune": {"loss": "ce"}}'
  [none_authors_negatives]='{"finetune": {"negatives_exclude_heldout": true}}')
arms=("$@")
[ ${#arms[@]} -gt 0 ] || arms=(authors_bce none_padded_ndcg20 none_bucketed_ndcg10 authors_ce none_bucketed_ndcg20 none_padded_ndcg10
                                none_authors_negatives)

for seed in 0 1 2; do
  for arm in "${arms[@]}"; do
    run=$out/$arm/seed$seed
    [ -f "$run/metrics.json" ] && continue
    pretrained=()
    [ "${variant[$arm]}" = authors ] && pretrained=(--pretrained "$out/authors/pretrain.pt")
    mkdir -p "$run"
    echo "$(date +%T) $arm seed $seed"
    python scripts/finetune.py --data "$data" --variant "${variant[$arm]}" --seed $seed --out-dir "$run" \
        --settings "${settings[$arm]}" --threads 1 "${pretrained[@]}" > "$run/finetune.log" 2>&1
  done
done
