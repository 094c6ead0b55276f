#!/usr/bin/env bash
# A single-node Slurm cluster on this machine (Debian's slurm-wlm + munge, nothing from the
# internet): the test fixture and `make slurm` use it to launch Hydra sweeps through
# hydra/launcher=slurm (submitit) for real. Idempotent; `stop` ends the daemons.
set -euo pipefail
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
log() { printf '\033[1m[slurm]\033[0m %s\n' "$*" >&2; }

if [ "${1:-start}" = stop ]; then
  $SUDO pkill -x slurmd || true; $SUDO pkill -x slurmctld || true; $SUDO pkill -x munged || true
  exit 0
fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  log "installing slurm-wlm and munge"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq slurm-wlm munge >/dev/null
fi
host=$(hostname -s)
cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
conf=/etc/slurm/slurm.conf
want=$(cat <<CONF
# written by litecoder's scripts/slurm_local.sh: one node, this machine
ClusterName=litecoder
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
)
if [ ! -f "$conf" ] || [ "$(cat "$conf")" != "$want" ]; then
  echo "$want" | $SUDO tee "$conf" >/dev/null
  $SUDO pkill -x slurmd || true; $SUDO pkill -x slurmctld || true
fi
$SUDO mkdir -p /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
[ -s /etc/munge/munge.key ] || $SUDO mungekey --create >/dev/null 2>&1 || \
  $SUDO dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null
$SUDO chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
$SUDO chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || $SUDO -u munge /usr/sbin/munged 2>/dev/null || $SUDO /usr/sbin/munged --force
pgrep -x slurmctld >/dev/null || $SUDO /usr/sbin/slurmctld
pgrep -x slurmd >/dev/null || $SUDO /usr/sbin/slurmd
for _ in $(seq 60); do
  sinfo -h -o %t 2>/dev/null | grep -Eq '^(idle|mix|alloc)' && { log "ready: $(sinfo -h -o '%P %D %t %c')"; exit 0; }
  sleep 1
done
log "slurm did not come up; see /var/log/slurm/"; exit 1
