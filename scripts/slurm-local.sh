#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for trying `--executor slurm` (issue 18) without a
# cluster: installs Debian's slurm-wlm and munge when missing, writes a configuration for this
# host under $GPL_SLURM_DIR (default /tmp/gpl-slurm; /etc/slurm is left alone), starts munged,
# slurmctld and slurmd, and waits until the node is idle. Needs root (slurmd runs jobs as
# their users). The tests named `slurm` (tests/it/runner_slurm.rs) start it themselves and stop
# it when their process exits.
#
#   bash scripts/slurm-local.sh start   # then: export SLURM_CONF=/tmp/gpl-slurm/slurm.conf
#   bash scripts/slurm-local.sh stop    # ends the daemons it started
set -euo pipefail

dir=${GPL_SLURM_DIR:-/tmp/gpl-slurm}
conf=$dir/slurm.conf
export SLURM_CONF=$conf

start() {
  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
  fi
  mkdir -p "$dir/state" "$dir/spool" "$dir/log"

  # munge: the package's key and socket; started here only when no munged answers.
  if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    [ -s /etc/munge/munge.key ] || su -s /bin/sh munge -c "mungekey --create"
    mkdir -p /run/munge && chown munge:munge /run/munge
    su -s /bin/sh munge -c /usr/sbin/munged
    touch "$dir/started-munged"
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  fi

  local host cpus memory
  host=$(hostname -s)
  cpus=$(nproc)
  # Half the memory for jobs, at least 1 GB: the machine runs other things too.
  memory=$(awk '/MemTotal/ { m = int($2 / 2048); print (m < 1000 ? 1000 : m) }' /proc/meminfo)
  cat >"$conf" <<EOF
ClusterName=gpl
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
# No cgroups in a container: track processes through /proc, bind no tasks.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
# No slurmdbd: sacct does not work, squeue -t all sees finished jobs for MinJobAge seconds.
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MinJobAge=600
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
NodeName=$host CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  # -c: no jobs or node states from an earlier start.
  /usr/sbin/slurmctld -c -f "$conf"
  /usr/sbin/slurmd -f "$conf"
  for _ in $(seq 100); do
    if [ "$(sinfo -h -o %T 2>/dev/null)" = idle ]; then
      echo "slurm is up: export SLURM_CONF=$conf"
      return 0
    fi
    sleep 0.2
  done
  echo "slurm did not come up; logs in $dir/log" >&2
  sinfo >&2 || true
  return 1
}

stop() {
  [ -f "$conf" ] && scontrol shutdown 2>/dev/null || true
  for pidfile in "$dir/slurmctld.pid" "$dir/slurmd.pid"; do
    for _ in $(seq 50); do
      [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null || break
      sleep 0.1
    done
  done
  if [ -f "$dir/started-munged" ]; then
    su -s /bin/sh munge -c "/usr/sbin/munged --stop" || true
    rm -f "$dir/started-munged"
  fi
}

case ${1:-start} in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
