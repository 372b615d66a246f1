#!/usr/bin/env bash
# Give the one-node SLURM of ../shared/slurm-local (start-slurm.sh) two fake GPUs with 4 shards
# each, so that `sbatch --gpus=1` and `sbatch --gres=shard:1` are accepted and sacct records
# gres/gpu and gres/shard; tests/test_gpu_profile.py then checks what profiles/slurm asks for.
#     bash tests/slurm_fake_gpu.sh            # add the fake GPUs (as root, after start-slurm.sh)
#     bash tests/slurm_fake_gpu.sh restore    # back to the config start-slurm.sh writes
# The "GPUs" are character devices aliasing /dev/null (slurmd wants a device File= for shards):
# jobs get CUDA_VISIBLE_DEVICES but no GPU. Tested with SLURM 22.05.8 (Debian 12).
set -euo pipefail

START=${START_SLURM:-$(cd "$(dirname "$0")/../.." && pwd)/shared/slurm-local/start-slurm.sh}
CONF=/etc/slurm/slurm.conf
DEV=/tmp/slurm-fake-gpu

[ "$(id -u)" = 0 ] || { echo "must run as root" >&2; exit 1; }

restart() {  # stop slurmd and slurmctld by their pid files, start them again, wait for the node
  local pid
  for d in slurmd slurmctld; do
    pid=$(cat "/run/$d.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    fi
  done
  rm -f /run/slurmctld.pid /run/slurmd.pid
  /usr/sbin/slurmctld
  for _ in $(seq 1 60); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.5; done
  /usr/sbin/slurmd -N localhost
  for _ in $(seq 1 120); do
    case "$(sinfo -h -n localhost -o %T 2>/dev/null | head -n1)" in
      idle|mixed|allocated) break ;;
      drain*|down*|inval*) scontrol update NodeName=localhost State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
  done
  sinfo -o '%N %T %G'
}

if [ "${1:-add}" = restore ]; then
  rm -f /etc/slurm/gres.conf
  rm -rf "$DEV"
  bash "$START"   # rewrites slurm.conf (it differs) and restarts slurmctld + slurmd
  exit 0
fi

mkdir -p "$DEV"
for i in 0 1; do [ -c "$DEV/nvidia$i" ] || mknod "$DEV/nvidia$i" c 1 3; done
sed -i -e 's/ Gres=[^ ]*//' \
       -e 's/^\(NodeName=localhost .*\) State=UNKNOWN$/\1 Gres=gpu:2,shard:8 State=UNKNOWN/' \
       -e '/^GresTypes=/d' -e '/^AccountingStorageTRES=/d' "$CONF"
sed -i '/^SelectTypeParameters=/a GresTypes=gpu,shard\nAccountingStorageTRES=gres/gpu,gres/shard' "$CONF"
printf 'Name=gpu File=%s/nvidia[0-1]\nName=shard Count=8 File=%s/nvidia[0-1]\n' "$DEV" "$DEV" >/etc/slurm/gres.conf
restart
