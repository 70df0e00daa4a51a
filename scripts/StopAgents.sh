#!/bin/sh
# Stop kq agents on this machine:
#
#   StopAgents.sh                             every kq agent of this user on this machine (as the seed's did)
#   StopAgents.sh DATA_ROOT [GRACE_SECONDS]   the agents StartAgents.sh started with this data root
#
# A kq agent is a process whose command line is exactly kq-agent's: a node binary running kq-agent.js (or the
# kq-agent link npm installs), as StartAgents.sh and a user start it. Nothing else is touched, however it is
# named; kq's own local agents (dist/src/agent/main.js --local) are kq's to stop. With DATA_ROOT, only the
# processes named in DATA_ROOT/run/remote_agent_<n>.pid that are kq agents (a pid file whose pid now belongs
# to something else is removed, that process left alone).
# Each gets SIGTERM (it kills its render, hands its task back to kq, exits); one still running after
# GRACE_SECONDS (default 10) is killed with SIGKILL, together with the render process groups it started.
# Nothing running is fine (exit 0).
# Exit codes: 0 done (or nothing to stop), 1 an agent could not be signalled, 2 bad arguments.
set -u

PROG=StopAgents.sh

usage() {
  cat >&2 <<'EOF'
usage: StopAgents.sh [DATA_ROOT [GRACE_SECONDS]]
  (none)          stop every kq agent of this user on this machine
  DATA_ROOT       the data root given to StartAgents.sh (its run/remote_agent_<n>.pid files)
  GRACE_SECONDS   time between SIGTERM and SIGKILL (default 10, 0-3600)
EOF
}

bad_usage() {
  printf '%s: %s\n' "$PROG" "$*" >&2
  usage
  exit 2
}

# Is PID a kq agent? Its command line must be exactly kq-agent's: argv[0] a node binary, argv[1] kq-agent.js
# (or kq-agent). A process merely naming kq-agent somewhere (an editor, a launcher, `sleep` under another name)
# is not one.
is_kq_agent() {
  case ${1:-} in '' | *[!0-9]*) return 1 ;; esac
  if [ -r "/proc/$1/cmdline" ]; then
    # argv[0] and argv[1] (NUL-separated in /proc), one a line.
    args=$(tr '\000' '\n' <"/proc/$1/cmdline" 2>/dev/null | head -n 2)
    exe=${args%%"
"*}
    script=${args#*"
"}
    [ "$exe" != "$args" ] || return 1 # fewer than two arguments
  else
    set -- $(ps -p "$1" -o command= 2>/dev/null) # no /proc: split on spaces (paths with spaces never match)
    [ "$#" -ge 2 ] || return 1
    exe=$1
    script=$2
  fi
  case ${exe##*/} in node | nodejs | node[0-9]*) ;; *) [ "$exe" = "${KQ_NODE:-}" ] || return 1 ;; esac
  case ${script##*/} in kq-agent.js | kq-agent) return 0 ;; esac
  return 1
}

# This user's (real uid) kq agents, one pid a line. One grep finds the candidates; each is then checked exactly.
my_kq_agents() {
  me=$(id -u)
  if [ -d /proc/self ]; then
    for file in $(grep -l -a -F kq-agent /proc/[0-9]*/cmdline 2>/dev/null); do
      pid=${file#/proc/}
      pid=${pid%/cmdline}
      uid=$(sed -n 's/^Uid:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$pid/status" 2>/dev/null)
      [ "$uid" = "$me" ] && is_kq_agent "$pid" && echo "$pid"
    done
  else
    ps -u "$me" -o pid= 2>/dev/null | while read -r pid; do is_kq_agent "$pid" && echo "$pid"; done
  fi
  return 0
}

[ "$#" -le 2 ] || bad_usage "expected no arguments, or DATA_ROOT and an optional GRACE_SECONDS, got $# arguments"
DATA_ROOT=${1-}
GRACE=${2:-10}
[ "$#" -eq 0 ] || [ -n "$DATA_ROOT" ] || bad_usage 'DATA_ROOT is empty'
case $DATA_ROOT in # a leading ~ is this user's home (for values passed quoted)
  '~') DATA_ROOT=$HOME ;;
  '~/'*) DATA_ROOT=$HOME/${DATA_ROOT#'~/'} ;;
esac
case $GRACE in '' | *[!0-9]*) bad_usage "GRACE_SECONDS must be a whole number of seconds, got \"$GRACE\"" ;; esac
[ "${#GRACE}" -le 4 ] && [ "$GRACE" -le 3600 ] || bad_usage "GRACE_SECONDS must be at most 3600, got \"$GRACE\""
THIS_HOST=$(uname -n)
RUN=$DATA_ROOT/run
status=0
signalled=

# name N PID: how messages name an agent (N is its slot, or - without DATA_ROOT).
name() { if [ "$1" = - ]; then echo "(pid $2)"; else echo "$1 (pid $2)"; fi; }

# signal N PID: SIGTERM to one agent, noted in its log when it has one.
signal() {
  if kill -s TERM "$2" 2>/dev/null; then
    [ "$1" = - ] || printf '%s StopAgents.sh: SIGTERM to kq agent %s (pid %s)\n' "$(date '+%Y-%m-%dT%H:%M:%S%z')" "$1" "$2" \
      >>"$DATA_ROOT/logs/remote_agent_$1.log" 2>/dev/null
    signalled="$signalled $1:$2"
  else
    echo "$PROG: cannot signal kq agent $(name "$1" "$2") as $(id -un 2>/dev/null): not ours?" >&2
    status=1
  fi
}

if [ "$#" -eq 0 ]; then
  for pid in $(my_kq_agents); do signal - "$pid"; done
  if [ -z "$signalled" ]; then
    [ "$status" -eq 0 ] && echo "no kq agents of $(id -un 2>/dev/null || id -u) running on $THIS_HOST"
    exit "$status"
  fi
else
  if [ ! -d "$RUN" ]; then
    echo "no kq agents recorded in $RUN on $THIS_HOST: nothing to stop"
    exit 0
  fi
  for pidfile in "$RUN"/remote_agent_*.pid; do
    [ -f "$pidfile" ] || continue # the pattern matched nothing
    n=${pidfile##*/remote_agent_}
    n=${n%.pid}
    pid=$(cat "$pidfile" 2>/dev/null)
    if ! is_kq_agent "$pid"; then
      echo "kq agent $n (pid ${pid:-?}) is not running: removed its pid file"
      rm -f "$pidfile"
      continue
    fi
    signal "$n" "$pid"
  done
  if [ -z "$signalled" ]; then
    [ "$status" -eq 0 ] && echo "no kq agents running from $DATA_ROOT on $THIS_HOST"
    exit "$status"
  fi
fi

# Wait up to GRACE seconds for all of them.
ticks=$((GRACE * 10))
i=0
while [ "$i" -lt "$ticks" ]; do
  alive=0
  for entry in $signalled; do
    is_kq_agent "${entry#*:}" && alive=1 && break
  done
  [ "$alive" -eq 0 ] && break
  sleep 0.1
  i=$((i + 1))
done

count=0
for entry in $signalled; do
  n=${entry%%:*}
  pid=${entry#*:}
  if is_kq_agent "$pid"; then
    # Renders run in their own process groups: kill those too, or they would be orphaned.
    children=$(pgrep -P "$pid" 2>/dev/null || true)
    kill -s KILL "$pid" 2>/dev/null
    for c in $children; do
      kill -s KILL -- "-$c" 2>/dev/null || kill -s KILL "$c" 2>/dev/null
    done
    echo "kq agent $(name "$n" "$pid") did not stop within ${GRACE}s: killed it (SIGKILL)"
  else
    echo "stopped kq agent $(name "$n" "$pid")"
  fi
  [ "$n" = - ] || rm -f "$RUN/remote_agent_$n.pid"
  count=$((count + 1))
done
echo "stopped $count kq agent(s) on $THIS_HOST"
exit "$status"
