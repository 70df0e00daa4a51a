#!/bin/sh
# Stop the kq agents StartAgents.sh started with this data root:
#
#   StopAgents.sh DATA_ROOT [GRACE_SECONDS]
#
# Only processes named in DATA_ROOT/run/remote_agent_<n>.pid whose command line is kq-agent's are touched
# (a pid file whose pid now belongs to something else is removed, that process left alone).
# Each gets SIGTERM (it stops its render, tells kq, exits); one still running after GRACE_SECONDS
# (default 10) is killed with SIGKILL, together with the render process groups it started.
# Nothing running is fine (exit 0).
# Exit codes: 0 done (or nothing to stop), 1 an agent could not be signalled, 2 bad arguments.
set -u

PROG=StopAgents.sh

usage() {
  cat >&2 <<'EOF'
usage: StopAgents.sh DATA_ROOT [GRACE_SECONDS]
  DATA_ROOT       the data root given to StartAgents.sh (its run/remote_agent_<n>.pid files)
  GRACE_SECONDS   time between SIGTERM and SIGKILL (default 10, 0-3600)
EOF
}

bad_usage() {
  printf '%s: %s\n' "$PROG" "$*" >&2
  usage
  exit 2
}

is_kq_agent() {
  case ${1:-} in '' | *[!0-9]*) return 1 ;; esac
  if [ -r "/proc/$1/cmdline" ]; then
    tr '\000' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q 'kq-agent'
  else
    ps -p "$1" -o command= 2>/dev/null | grep -q 'kq-agent'
  fi
}

[ "$#" -ge 1 ] && [ "$#" -le 2 ] || bad_usage "expected DATA_ROOT and an optional GRACE_SECONDS, got $# argument(s)"
DATA_ROOT=$1
GRACE=${2:-10}
[ -n "$DATA_ROOT" ] || bad_usage 'DATA_ROOT is empty'
case $DATA_ROOT in # a leading ~ is this user's home (for values passed quoted)
  '~') DATA_ROOT=$HOME ;;
  '~/'*) DATA_ROOT=$HOME/${DATA_ROOT#'~/'} ;;
esac
case $GRACE in '' | *[!0-9]*) bad_usage "GRACE_SECONDS must be a whole number of seconds, got \"$GRACE\"" ;; esac
[ "${#GRACE}" -le 4 ] && [ "$GRACE" -le 3600 ] || bad_usage "GRACE_SECONDS must be at most 3600, got \"$GRACE\""
THIS_HOST=$(uname -n)
RUN=$DATA_ROOT/run

if [ ! -d "$RUN" ]; then
  echo "no kq agents recorded in $RUN on $THIS_HOST: nothing to stop"
  exit 0
fi

status=0
signalled=
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
  if kill -s TERM "$pid" 2>/dev/null; then
    printf '%s StopAgents.sh: SIGTERM to kq agent %s (pid %s)\n' "$(date '+%Y-%m-%dT%H:%M:%S%z')" "$n" "$pid" \
      >>"$DATA_ROOT/logs/remote_agent_$n.log" 2>/dev/null
    signalled="$signalled $n:$pid"
  else
    echo "$PROG: cannot signal kq agent $n (pid $pid) as $(id -un 2>/dev/null): not ours?" >&2
    status=1
  fi
done

if [ -z "$signalled" ]; then
  [ "$status" -eq 0 ] && echo "no kq agents running from $DATA_ROOT on $THIS_HOST"
  exit "$status"
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
    echo "kq agent $n (pid $pid) did not stop within ${GRACE}s: killed it (SIGKILL)"
  else
    echo "stopped kq agent $n (pid $pid)"
  fi
  rm -f "$RUN/remote_agent_$n.pid"
  count=$((count + 1))
done
echo "stopped $count kq agent(s) on $THIS_HOST"
exit "$status"
