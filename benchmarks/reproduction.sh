#!/usr/bin/env bash
# Reproduction against the S3Rec authors (README, "Reproduction"): finetuning arms of SASRec
# (`none`) and of the authors' released checkpoints, one single-threaded run at a time. Beauty
# arms use this project's protocols; the lastfm_* arms the authors' exact sampled protocol
# (their LastFM_sample.txt negatives, early stopping on the sampled MRR as run_finetune_sample.py);
# lastfm_none_sampled_patience30 waits 30 epochs instead of 10 (SASRec plateaus early on LastFM).
# Runs are resumable and skipped once their metrics.json exists, so the script can be stopped
# and started again. Summarise with: python benchmarks/reproduction_table.py OUT
#
#   bash benchmarks/reproduction.sh OUT [ARM ...]     (default OUT: results/reproduction)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-results/reproduction}; shift || true
shared=../shared

prepare() {  # data set name, file prefix, extra prepare_data.py arguments
  [ -f "$out/resources/$1/stats.json" ] || python scripts/prepare_data.py --format s3rec \
      --sequences $shared/data/s3rec/$2.txt --attributes $shared/data/s3rec/$2_item2attributes.json "${@:3}" \
      --out "$out/resources/$1"
}
import_authors() {  # data set name, file prefix, folder
  [ -f "$out/$3/pretrain.pt" ] || python scripts/import_checkpoint.py --authors $shared/authors/$2-epochs-150.pt \
      --data "$out/resources/$1" --out "$out/$3/pretrain.pt" --variant authors
}

bucketed10='{"finetune": {"batching": "bucketed", "early_stopping_metric": "NDCG@10"}}'
# arm: variant, settings (defaults: padded batches, early stopping on NDCG@20, bce)
declare -A variant=(
  [none_padded_ndcg20]=none [none_bucketed_ndcg10]=none [none_bucketed_ndcg20]=none [none_padded_ndcg10]=none
  [authors_bce]=authors [authors_ce]=authors [none_authors_negatives]=none
  [lastfm_none_sampled]=none [lastfm_authors_sampled]=authors [lastfm_none_sampled_patience30]=none)
authors_sampled='{"eval": {"negatives": "file"}, "finetune": {"early_stopping_protocol": "sampled", "early_stopping_metric": "MRR"}}'
declare -A settings=(
  [none_padded_ndcg20]='{}' [none_bucketed_ndcg10]=$bucketed10
  [none_bucketed_ndcg20]='{"finetune": {"batching": "bucketed"}}'
  [none_padded_ndcg10]='{"finetune": {"early_stopping_metric": "NDCG@10"}}'
  [authors_bce]='{}' [authors_ce]='{"finetune": {"loss": "ce"}}'
  [none_authors_negatives]='{"finetune": {"negatives_exclude_heldout": true}}'
  [lastfm_none_sampled]=$authors_sampled [lastfm_authors_sampled]=$authors_sampled
  [lastfm_none_sampled_patience30]='{"eval": {"negatives": "file"}, "finetune": {"early_stopping_protocol": "sampled", "early_stopping_metric": "MRR", "patience": 30}}')
arms=("$@")
[ ${#arms[@]} -gt 0 ] || arms=(authors_bce none_padded_ndcg20 none_bucketed_ndcg10 authors_ce none_bucketed_ndcg20 none_padded_ndcg10
                                none_authors_negatives lastfm_none_sampled lastfm_authors_sampled lastfm_none_sampled_patience30)

for arm in "${arms[@]}"; do
  [ -n "${variant[$arm]:-}" ] || { echo "reproduction.sh: unknown arm $arm" >&2; exit 2; }
done
# each data set prepared, and the authors' checkpoint imported, only where an arm asked for needs it
needs() {  # data set (beauty | lastfm), what (data | authors): 0 when an asked arm needs it
  local arm dataset
  for arm in "${arms[@]}"; do
    dataset=beauty
    [[ $arm == lastfm_* ]] && dataset=lastfm
    [ "$dataset" = "$1" ] || continue
    if [ "$2" = data ] || [ "${variant[$arm]}" = authors ]; then return 0; fi
  done
  return 1
}
if needs beauty data; then prepare beauty Beauty; fi
if needs beauty authors; then import_authors beauty Beauty authors; fi
if needs lastfm data; then prepare lastfm LastFM --negatives $shared/data/s3rec/LastFM_sample.txt; fi
if needs lastfm authors; then import_authors lastfm LastFM authors_lastfm; fi

for seed in 0 1 2; do
  for arm in "${arms[@]}"; do
    run=$out/$arm/seed$seed
    [ -f "$run/metrics.json" ] && continue
    data=$out/resources/beauty authors=$out/authors
    [[ $arm == lastfm_* ]] && data=$out/resources/lastfm authors=$out/authors_lastfm
    pretrained=()
    [ "${variant[$arm]}" = authors ] && pretrained=(--pretrained "$authors/pretrain.pt")
    mkdir -p "$run"
    echo "$(date +%T) $arm seed $seed"
    python scripts/finetune.py --data "$data" --variant "${variant[$arm]}" --seed $seed --out-dir "$run" \
        --settings "${settings[$arm]}" --threads 1 "${pretrained[@]}" > "$run/finetune.log" 2>&1
  done
done
