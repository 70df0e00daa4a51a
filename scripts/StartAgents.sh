#!/bin/sh
# Start kq render agents on this machine that dial back into kq (the seed's interface, kept exactly):
#
#   StartAgents.sh INSTALL_ROOT DATA_ROOT KQ_HOST REQUEST_PORT UPDATE_PORT BROADCAST_PORT NUM_AGENTS
#
# Each agent runs detached (setsid -f, stdin from /dev/null) as
#   node INSTALL_ROOT/bin/kq-agent.js --minimal-env True --request-port P --update-port P --broadcast-port P KQ_HOST
# logging to DATA_ROOT/logs/remote_agent_<n>.log, its pid in DATA_ROOT/run/remote_agent_<n>.pid
# (StopAgents.sh DATA_ROOT stops exactly those). Slots whose agent still runs are left alone.
# Every value is passed as one argument and never evaluated.
#
# Before starting, it checks what the seed's troubleshooting list asked people to check by hand:
# the data root is writable, KQ_HOST resolves here, and kq's ports accept connections from here.
#
# Exit codes: 0 started; 2 bad arguments, no kq install or no usable node; 3 data root not writable;
#   4 KQ_HOST does not resolve on this machine; 5 kq's ports are not reachable from this machine;
#   6 an agent did not start or exited at once.
# Environment: KQ_NODE  node binary to run (default: node on PATH)
#              KQ_SKIP_CHECKS=1  skip the name and port checks (e.g. to start agents before kq)
#              KQ_SERVER_KEY, KQ_KEY_FILE  when kq requires CURVE: kq's public key (or its certificate file)
#                and this machine's secret certificate; passed on to the agents in their environment, so
#                their command line stays the one above (kqctl remote start copies both to DATA_ROOT/keys).
set -u

PROG=StartAgents.sh

usage() {
  cat >&2 <<'EOF'
usage: StartAgents.sh INSTALL_ROOT DATA_ROOT KQ_HOST REQUEST_PORT UPDATE_PORT BROADCAST_PORT NUM_AGENTS
  INSTALL_ROOT    kq installed on this machine: a checkout with bin/kq-agent.js and dist/ built
  DATA_ROOT       where logs/remote_agent_<n>.log and run/remote_agent_<n>.pid go (created if missing)
  KQ_HOST         address or name of the machine running kq, as this machine reaches it
  REQUEST_PORT, UPDATE_PORT, BROADCAST_PORT   kq's ports (see kq.json in kq's data root)
  NUM_AGENTS      how many agents to start (1-256)
example: StartAgents.sh /opt/kq /var/tmp/kq render-master 5560 5561 5562 4
EOF
}

fail() { # fail CODE MESSAGE...
  code=$1
  shift
  printf '%s: %s\n' "$PROG" "$*" >&2
  exit "$code"
}

bad_usage() {
  printf '%s: %s\n' "$PROG" "$*" >&2
  usage
  exit 2
}

is_whole_number() { # is_whole_number VALUE MIN MAX
  case $1 in '' | *[!0-9]*) return 1 ;; esac
  [ "${#1}" -le 6 ] && [ "$1" -ge "$2" ] && [ "$1" -le "$3" ]
}

# An absolute path: a leading ~ is this user's home (for values passed quoted), others are made absolute.
absolute() {
  case $1 in
    /*) printf '%s\n' "$1" ;;
    '~') printf '%s\n' "$HOME" ;;
    '~/'*) printf '%s/%s\n' "$HOME" "${1#'~/'}" ;;
    *) printf '%s/%s\n' "$(pwd)" "$1" ;;
  esac
}

# Is PID a running kq agent? Its command line must be exactly kq-agent's: argv[0] a node binary, argv[1]
# kq-agent.js (or kq-agent). A recycled pid running something else is not, nor is the launcher below
# before it has exec'd into the agent (its command line names kq-agent-launch).
is_kq_agent() {
  case ${1:-} in '' | *[!0-9]*) return 1 ;; esac
  if [ -r "/proc/$1/cmdline" ]; then
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

[ "$#" -eq 7 ] || bad_usage "expected 7 arguments, got $#"

INSTALL_ROOT=$1
DATA_ROOT=$2
KQ_HOST=$3
REQUEST_PORT=$4
UPDATE_PORT=$5
BROADCAST_PORT=$6
NUM_AGENTS=$7
NODE=${KQ_NODE:-node}
THIS_HOST=$(uname -n)

for pair in "REQUEST_PORT=$REQUEST_PORT" "UPDATE_PORT=$UPDATE_PORT" "BROADCAST_PORT=$BROADCAST_PORT"; do
  is_whole_number "${pair#*=}" 1 65535 || bad_usage "${pair%%=*} must be a port number from 1 to 65535, got \"${pair#*=}\""
done
is_whole_number "$NUM_AGENTS" 1 256 || bad_usage "NUM_AGENTS must be a whole number from 1 to 256, got \"$NUM_AGENTS\""
case $KQ_HOST in
  '') bad_usage 'KQ_HOST is empty' ;;
  -*) bad_usage "KQ_HOST must be a host name or address, got \"$KQ_HOST\"" ;;
  *[!A-Za-z0-9._:%-]*) bad_usage "KQ_HOST must be a host name or address (letters, digits, . - : %), got \"$KQ_HOST\"" ;;
esac
[ -n "$INSTALL_ROOT" ] || bad_usage 'INSTALL_ROOT is empty'
[ -n "$DATA_ROOT" ] || bad_usage 'DATA_ROOT is empty'

INSTALL_ROOT=$(absolute "$INSTALL_ROOT")
DATA_ROOT=$(absolute "$DATA_ROOT")
AGENT_JS=$INSTALL_ROOT/bin/kq-agent.js

[ -d "$INSTALL_ROOT" ] || bad_usage "INSTALL_ROOT $INSTALL_ROOT does not exist on $THIS_HOST"
[ -f "$AGENT_JS" ] || bad_usage "INSTALL_ROOT $INSTALL_ROOT is not a kq install: $AGENT_JS is missing"
[ -f "$INSTALL_ROOT/dist/src/agent/main.js" ] ||
  fail 2 "kq in $INSTALL_ROOT is not built (no dist/src/agent/main.js): run 'npm ci && npx tsc -p .' there"
command -v "$NODE" >/dev/null 2>&1 ||
  fail 2 "cannot find node ('$NODE') on $THIS_HOST (PATH=$PATH): install Node.js 20 or later, or set KQ_NODE to its path"
command -v setsid >/dev/null 2>&1 || fail 2 "setsid (util-linux) is not installed on $THIS_HOST"

# Data root: created if missing, and must be writable by this user.
WHO=$(id -un 2>/dev/null || echo "uid $(id -u)")
mkdir -p "$DATA_ROOT/logs" "$DATA_ROOT/run" 2>/dev/null ||
  fail 3 "cannot create $DATA_ROOT/logs and $DATA_ROOT/run as $WHO on $THIS_HOST: create the data root and give $WHO write access (mkdir -p DIR && chown $WHO DIR), or choose another DATA_ROOT"
probe=$DATA_ROOT/run/.write-test.$$
if ! { : >"$probe" && : >"$DATA_ROOT/logs/.write-test.$$"; } 2>/dev/null; then
  rm -f "$probe" "$DATA_ROOT/logs/.write-test.$$" 2>/dev/null
  fail 3 "data root $DATA_ROOT is not writable by $WHO on $THIS_HOST: give $WHO write access to it (and its logs/ and run/), or choose another DATA_ROOT"
fi
rm -f "$probe" "$DATA_ROOT/logs/.write-test.$$"

# CURVE keys for the agents (both or neither), as absolute paths: the agents run from another directory.
if [ -n "${KQ_SERVER_KEY:-}" ] || [ -n "${KQ_KEY_FILE:-}" ]; then
  [ -n "${KQ_SERVER_KEY:-}" ] && [ -n "${KQ_KEY_FILE:-}" ] ||
    fail 2 "KQ_SERVER_KEY and KQ_KEY_FILE go together (kq's public key, and this machine's secret certificate)"
  KQ_KEY_FILE=$(absolute "$KQ_KEY_FILE")
  [ -r "$KQ_KEY_FILE" ] || fail 2 "KQ_KEY_FILE $KQ_KEY_FILE is not readable by $WHO on $THIS_HOST"
  server_key_file=$(absolute "$KQ_SERVER_KEY") # a certificate file (absolute from here on), or the key itself
  [ -f "$server_key_file" ] && KQ_SERVER_KEY=$server_key_file
  export KQ_SERVER_KEY KQ_KEY_FILE
fi

# node version, then (unless skipped) the seed's troubleshooting list: can this machine resolve KQ_HOST
# and open TCP connections to kq's three ports? One node process; values are passed as arguments.
CHECKS='
const [mode, host, ...ports] = process.argv.slice(1);
const major = Number(process.versions.node.split(".")[0]);
if (major < 20) { console.error(`StartAgents.sh: node ${process.version} is too old: kq-agent needs Node.js 20 or later`); process.exit(2); }
if (mode === "skip") process.exit(0);
const dns = require("node:dns"), net = require("node:net"), os = require("node:os");
const here = os.hostname();
const timeout = (ms, what) => new Promise((_, reject) => setTimeout(() => reject(Object.assign(new Error(what), { code: "ETIMEDOUT" })), ms).unref());
(async () => {
  let addresses;
  try {
    addresses = await Promise.race([dns.promises.lookup(host, { all: true }), timeout(5000, "lookup timed out")]);
  } catch (err) {
    console.error(`StartAgents.sh: cannot resolve the kq host "${host}" on ${here} (${err.code || err.message}): pass an IP address, or a name this machine resolves (check /etc/hosts or DNS here)`);
    process.exit(4);
  }
  const probe = (port) => new Promise((resolve) => {
    const s = net.connect({ host, port: Number(port) });
    s.setTimeout(3000, () => { s.destroy(); resolve("ETIMEDOUT"); });
    s.on("connect", () => { s.destroy(); resolve(null); });
    s.on("error", (err) => resolve(err.code || err.message));
  });
  const results = await Promise.all(ports.map(probe));
  const bad = ports.map((p, i) => [p, results[i]]).filter(([, r]) => r);
  if (bad.length === 0) return;
  const list = bad.map(([p, r]) => `${p} (${r})`).join(", ");
  const refused = bad.some(([, r]) => r === "ECONNREFUSED");
  console.error(`StartAgents.sh: cannot connect from ${here} to kq at ${host} [${addresses.map((a) => a.address).join(", ")}] on port(s) ${list}: ` +
    (refused ? "nothing listens there: is kq running, and listening on an address this machine can reach (kq --bind 0.0.0.0, or --bind <its address>)? "
             : "no answer: a firewall probably drops the packets; ") +
    `allow TCP ports ${ports.join(", ")} from ${here} to the kq machine`);
  process.exit(5);
})();
'
mode=check
[ "${KQ_SKIP_CHECKS:-}" = 1 ] && mode=skip
"$NODE" -e "$CHECKS" -- "$mode" "$KQ_HOST" "$REQUEST_PORT" "$UPDATE_PORT" "$BROADCAST_PORT" || {
  code=$?
  case $code in 2 | 4 | 5) exit "$code" ;; *) fail 2 "cannot run node ('$NODE') on $THIS_HOST (exit $code)" ;; esac
}

echo "starting $NUM_AGENTS kq agent(s) on $THIS_HOST for kq at $KQ_HOST (ports $REQUEST_PORT, $UPDATE_PORT, $BROADCAST_PORT)"

# Launch. The small sh -c program is fixed text: it writes its own pid (which exec keeps) and execs the agent
# with the arguments that follow it; nothing in them is evaluated.
LAUNCH='printf "%s\n" "$$" >"$1.tmp" && mv -f "$1.tmp" "$1" && shift && exec "$@"'
launched=
started=0
n=0
while [ "$started" -lt "$NUM_AGENTS" ]; do
  n=$((n + 1))
  pidfile=$DATA_ROOT/run/remote_agent_$n.pid
  log=$DATA_ROOT/logs/remote_agent_$n.log
  if [ -f "$pidfile" ]; then
    old=$(cat "$pidfile" 2>/dev/null)
    if is_kq_agent "$old"; then
      echo "kq agent $n is already running (pid $old): left alone"
      continue
    fi
    rm -f "$pidfile"
  fi
  printf '%s StartAgents.sh: starting kq agent %s on %s for kq at %s (ports %s, %s, %s)\n' \
    "$(date '+%Y-%m-%dT%H:%M:%S%z')" "$n" "$THIS_HOST" "$KQ_HOST" "$REQUEST_PORT" "$UPDATE_PORT" "$BROADCAST_PORT" >>"$log" ||
    fail 3 "cannot write $log"
  setsid -f sh -c "$LAUNCH" kq-agent-launch "$pidfile" \
    "$NODE" "$AGENT_JS" --minimal-env True \
    --request-port "$REQUEST_PORT" --update-port "$UPDATE_PORT" --broadcast-port "$BROADCAST_PORT" "$KQ_HOST" \
    </dev/null >>"$log" 2>&1 || fail 6 "setsid could not start kq agent $n"
  launched="$launched $n"
  started=$((started + 1))
done

# Wait until each has exec'd into the agent (pid file written, command line is kq-agent's), then give them
# a moment: an agent that cannot load (bad install, wrong node) exits at once.
wait_for_agent() { # wait_for_agent N → prints the pid
  i=0
  while [ "$i" -lt 100 ]; do
    p=$(cat "$DATA_ROOT/run/remote_agent_$1.pid" 2>/dev/null)
    if is_kq_agent "$p"; then
      echo "$p"
      return 0
    fi
    sleep 0.05
    i=$((i + 1))
  done
  return 1
}

pids=
for n in $launched; do
  p=$(wait_for_agent "$n") || p=none
  pids="$pids $n:$p"
done
sleep 0.5

failed=0
for entry in $pids; do
  n=${entry%%:*}
  p=${entry#*:}
  log=$DATA_ROOT/logs/remote_agent_$n.log
  if [ "$p" != none ] && is_kq_agent "$p"; then
    echo "started kq agent $n: pid $p, log $log"
  else
    failed=$((failed + 1))
    rm -f "$DATA_ROOT/run/remote_agent_$n.pid"
    {
      printf '%s: kq agent %s exited at once; the end of %s:\n' "$PROG" "$n" "$log"
      tail -n 15 "$log" 2>/dev/null | sed 's/^/  | /'
    } >&2
  fi
done
[ "$failed" -eq 0 ] || fail 6 "$failed of $NUM_AGENTS kq agent(s) did not start on $THIS_HOST (is $INSTALL_ROOT built for this machine's node, $("$NODE" --version 2>/dev/null)?)"
exit 0
