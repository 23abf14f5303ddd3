#!/bin/sh
# Runs deploy/systemd/scoped-server.{socket,service} as shipped under a real systemd: a Debian
# bookworm (systemd 252) booted with systemd-nspawn, and checks socket activation, Type=notify
# readiness, `systemctl reload` (a zero-downtime upgrade under request load), `systemctl stop`,
# and the hardening options (DynamicUser=, embedded PostgreSQL in StateDirectory=).
#
# NOT part of `npm test`: it needs root, debootstrap and systemd-nspawn (`apt-get install
# debootstrap systemd-container`), a reachable Debian mirror for the first run, and takes minutes.
# Run it on a Debian/Ubuntu host as root, from the repository, after `npm run build`:
#
#   sudo deploy/systemd/check-under-systemd.sh [ROOTFS]    # ROOTFS: /var/lib/machines/scoped-server-check
#
# What is adjusted, and only this: the app (dist/, package.json) is copied to /opt/scoped-server,
# node_modules and the pinned Node (node_modules/node/bin/node) are bind-mounted read-only at
# /opt/scoped-server/node_modules and /usr/bin/node, /etc/scoped-server/env gets a fresh
# JWT_SECRET. The container has its own network namespace (--private-network: its ports 3000 and
# 9090 are not the host's), so the database is the embedded one, unless EXTERNAL_PG names the
# socket directory of a host PostgreSQL that trusts local connections (e.g. /var/run/postgresql):
# then it is bind-mounted at /run/host-postgresql, a database scoped_server_systemd_check is
# created afresh in it, and DATABASE_URL in the env file points there. Prints one PASS/FAIL line
# per check and exits non-zero if any failed.
set -eu

repo=$(cd "$(dirname "$0")/../.." && pwd)
rootfs=${1:-/var/lib/machines/scoped-server-check}
machine=scoped-server-check
load_seconds=${LOAD_SECONDS:-12}

[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 2; }
[ -f "$repo/dist/main.js" ] || { echo "no $repo/dist/main.js: run npm run build first" >&2; exit 2; }
node_bin=$repo/node_modules/node/bin/node
[ -x "$node_bin" ] || node_bin=$(command -v node)
for tool in debootstrap systemd-nspawn nsenter; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install debootstrap systemd-container util-linux)" >&2; exit 2; }
done

if [ ! -x "$rootfs/lib/systemd/systemd" ]; then
  echo "debootstrap bookworm into $rootfs (a few minutes, once)"
  mkdir -p "$(dirname "$rootfs")"
  # libnss-systemd: DynamicUser='s uid must resolve for initdb (see docs/data.md).
  debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,dbus,libnss-systemd,curl,ca-certificates,procps \
    bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
fi
echo "$machine" >"$rootfs/etc/hostname"
rm -rf "$rootfs/opt/scoped-server/dist"
mkdir -p "$rootfs/opt/scoped-server/node_modules" "$rootfs/etc/scoped-server"
cp -r "$repo/dist" "$repo/package.json" "$rootfs/opt/scoped-server/"
cp "$repo/deploy/systemd/scoped-server.service" "$repo/deploy/systemd/scoped-server.socket" "$rootfs/etc/systemd/system/"
(umask 077 && echo "JWT_SECRET=$(head -c 32 /dev/urandom | base64)" >"$rootfs/etc/scoped-server/env")
external_bind=
if [ -n "${EXTERNAL_PG:-}" ]; then
  database=scoped_server_systemd_check
  psql -h "$EXTERNAL_PG" -U postgres -w -q -c "DROP DATABASE IF EXISTS $database" -c "CREATE DATABASE $database" >/dev/null
  mkdir -p "$rootfs/run/host-postgresql"
  external_bind=--bind-ro=$EXTERNAL_PG:/run/host-postgresql
  echo "DATABASE_URL=postgres://postgres@localhost/$database?host=/run/host-postgresql" >>"$rootfs/etc/scoped-server/env"
fi
# Each run starts from an empty state directory: the first start creates the cluster.
rm -rf "$rootfs/var/lib/private/scoped-server" "$rootfs/var/lib/scoped-server"

# The in-container part: checks as a shell script, the load as a small Node client.
cat >"$rootfs/root/load.mjs" <<'EOF'
// GET /livez as fast as 8 loops can go until SIGTERM, half on fresh connections, half keep-alive;
// prints {ok, failed, errors} at the end. Not /readyz: a draining worker answers it 503 on purpose
// (it tells a balancer to stop sending), which is not a failed request.
import * as Http from "node:http"
const keepAlive = new Http.Agent({ keepAlive: true, maxSockets: 4 })
let stop = false
const result = { ok: 0, failed: 0, errors: {} }
const once = (agent) =>
  new Promise((resolve) => {
    const req = Http.get({ host: "127.0.0.1", port: 3000, path: "/livez", agent, timeout: 10_000 }, (res) => {
      res.resume()
      res.on("end", () => resolve(res.statusCode === 200 ? null : `status ${res.statusCode}`))
      res.on("error", (e) => resolve(e.code ?? e.message))
    })
    req.on("timeout", () => req.destroy(new Error("timeout")))
    req.on("error", (e) => resolve(e.code ?? e.message))
  })
const loop = async (agent) => {
  while (!stop) {
    const error = await once(agent)
    if (error === null) result.ok++
    else {
      result.failed++
      result.errors[error] = (result.errors[error] ?? 0) + 1
    }
  }
}
process.on("SIGTERM", () => (stop = true))
await Promise.all([0, 1, 2, 3, 4, 5, 6, 7].map((i) => loop(i % 2 === 0 ? false : keepAlive)))
console.log(JSON.stringify(result))
EOF

cat >"$rootfs/root/check.sh" <<'EOF'
#!/bin/sh
set -u
failures=0
pass() { echo "PASS $*"; }
fail() { echo "FAIL $*"; failures=$((failures + 1)); }
now() { date +%s.%N | cut -c1-14; }
# Arithmetic on the timestamps (minbase has no bc): calc "1.5 - 0.25", calc "2 >= 1" (1 or 0).
calc() { awk "BEGIN { v = ($1); printf(v == int(v) ? \"%d\\n\" : \"%.2f\\n\", v) }"; }
show() { systemctl show -p "$1" --value scoped-server.service; }
poll() {
  while :; do
    echo "$(now) $(systemctl show -p ActiveState,SubState,MainPID --value scoped-server.service | tr '\n' ' ')"
    sleep 0.05
  done
}
load_seconds=$1
database=${2:-embedded}

systemctl daemon-reload
journalctl --rotate >/dev/null 2>&1; journalctl --vacuum-time=1s >/dev/null 2>&1
systemctl start scoped-server.socket
[ "$(show ActiveState)" = inactive ] && pass "socket started, service still inactive" || fail "service active before any connection"

# 1. Socket activation: the first request starts the service and is answered.
poll >/tmp/poll-start.log 2>&1 & poller=$!
t0=$(now)
code=$(curl -sS -m 150 -o /dev/null -w '%{http_code}' http://127.0.0.1:3000/readyz)
t1=$(now)
# READY=1 follows the first answered request by the time systemd-notify takes to run.
i=0; while [ "$(show SubState)" != running ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
sleep 0.2
kill $poller
[ "$code" = 200 ] && pass "first request started the service and got 200 in $(calc "$t1 - $t0")s" \
  || fail "first request: $code"
main=$(show MainPID)
supervisor=$(journalctl -u scoped-server -o short | grep 'workers ready' | head -1 | sed 's/.* node\[\([0-9]*\)\].*/\1/')
[ "$(ps -o ppid= -p "$main" | tr -d ' ')" = 1 ] && [ "$main" = "$supervisor" ] \
  && pass "MainPID $main is the supervisor (logged 'workers ready', parent PID 1)" \
  || fail "MainPID $main, supervisor logged as $supervisor"
# Active only once READY=1 came: every poll before 'active' saw 'activating', none saw active earlier.
first_active=$(grep -n ' active running' /tmp/poll-start.log | head -1 | cut -d: -f1)
if grep -q ' activating start' /tmp/poll-start.log && [ -n "$first_active" ] \
  && ! head -n "$first_active" /tmp/poll-start.log | grep -v -e ' active running' -e ' activating start' -e ' inactive dead' | grep -q .; then
  ready_at=$(journalctl -u scoped-server -o short-unix | grep 'workers ready' | head -1 | cut -d' ' -f1)
  started_at=$(journalctl -u scoped-server -o short-unix | grep 'Started scoped-server.service' | head -1 | cut -d' ' -f1)
  [ -n "$ready_at" ] && [ -n "$started_at" ] && [ "$(calc "$started_at >= $ready_at")" = 1 ] \
    && pass "activating until READY=1: 'workers ready' at $ready_at, systemd 'Started' at $started_at" \
    || fail "systemd said Started ($started_at) before the workers were ready ($ready_at)"
else
  fail "no activating → active (running) sequence: $(uniq -f1 /tmp/poll-start.log | tr '\n' '|')"
fi

# 2. Reload under load: reloading → active, MainPID unchanged, a new generation answers, no failure.
node /root/load.mjs >/tmp/load.json & loader=$!
sleep 2
poll >/tmp/poll-reload.log 2>&1 & poller=$!
r0=$(now)
systemctl reload scoped-server.service
r1=$(now)
# The upgrade ends with READY=1: wait for active again (UPGRADE_TIMEOUT is 60s).
i=0; while [ "$(show SubState)" != running ] && [ $i -lt 700 ]; do sleep 0.1; i=$((i + 1)); done
r2=$(now)
sleep 1
kill $poller
sleep $((load_seconds - 3 > 0 ? load_seconds - 3 : 1))
kill -TERM $loader; wait $loader
after=$(show MainPID)
states=$(cut -d' ' -f2- /tmp/poll-reload.log | uniq | tr '\n' ',')
case "$states" in
  *"reloading"*"active running"*) pass "reload: states $states systemctl reload returned in $(calc "$r1 - $r0")s, active again after $(calc "$r2 - $r0")s" ;;
  *) fail "reload: states $states" ;;
esac
[ "$after" = "$main" ] && pass "MainPID unchanged across the reload ($main)" || fail "MainPID $main → $after"
journalctl -u scoped-server -o cat | grep -q '"message":"upgrade".*"step":"completed".*"generation":2\|"message":"upgrade".*"generation":2.*"step":"completed"' \
  && pass "upgrade to generation 2 completed (supervisor log)" || fail "no completed upgrade to generation 2 in the journal"
gen2=$(journalctl -u scoped-server -o cat | grep '"message":"request"' | grep -c '"worker":"2\.')
[ "$gen2" -gt 0 ] && pass "generation 2 workers answered $gen2 requests" || fail "no request answered by generation 2"
load=$(cat /tmp/load.json)
case "$load" in
  *'"failed":0,'*) pass "load across the reload: $load" ;;
  *) fail "load across the reload: $load" ;;
esac

# 3. Hardening: a dynamic user, its PostgreSQL in the state directory, not root.
user=$(ps -o user= -p "$main" | tr -d ' ')
pg_user=$(ps -o user= -C postgres | sort -u | tr -d ' ' | tr '\n' ' ')
owner=$(stat -c %U /var/lib/private/scoped-server/postgres 2>/dev/null || echo missing)
if [ "$database" = embedded ]; then
  [ "$user" = scoped-server ] && [ "$pg_user" = "scoped-server " ] && [ "$owner" = scoped-server ] \
    && pass "DynamicUser: supervisor, workers and PostgreSQL run as $user (uid $(id -u scoped-server)); data in /var/lib/private/scoped-server" \
    || fail "users: supervisor $user, postgres $pg_user, data owner $owner"
else
  connected=$(journalctl -u scoped-server -o cat | grep -c '"postgres ready".*/run/host-postgresql')
  [ "$user" = scoped-server ] && [ -z "$pg_user" ] && [ "$connected" -gt 0 ] \
    && pass "DynamicUser: the service runs as $user, no embedded PostgreSQL, workers connected $connected times to the host's through /run/host-postgresql" \
    || fail "external database: user $user, embedded postgres as '$pg_user', $connected connections"
fi
uid=$(ps -o uid= -p "$main" | tr -d ' ')
seen=$(nsenter -t "$main" -m setpriv --reuid="$uid" --regid="$uid" --clear-groups sh -c 'ls -d /proc/[0-9]* | wc -l')
total=$(ls -d /proc/[0-9]* | wc -l)
[ "$seen" -lt "$total" ] && pass "ProtectProc=invisible: the service's uid sees $seen of $total processes in its /proc" \
  || fail "ProtectProc: the service's uid sees $seen of $total processes"
echo "INFO $(systemd-analyze security scoped-server.service 2>/dev/null | tail -1)"

# 4. Stop: drains, ends inactive (not failed) well within TimeoutStopSec.
s0=$(now)
systemctl stop scoped-server.socket scoped-server.service
s1=$(now)
result=$(show Result); state=$(show ActiveState)
[ "$state" = inactive ] && [ "$result" = success ] \
  && pass "stop: inactive, Result=success, in $(calc "$s1 - $s0")s (TimeoutStopSec=$(systemctl show -p TimeoutStopUSec --value scoped-server.service))" \
  || fail "stop: ActiveState=$state Result=$result after $(calc "$s1 - $s0")s"
journalctl -u scoped-server -o cat | grep '"phase":"stopped"' | grep -v '"worker"' | tail -1 | grep -q '"exitCode":0' \
  && pass "supervisor logged phase stopped, exitCode 0" || fail "no clean 'stopped' line from the supervisor"
left=$(ps -o pid=,args= -u "$uid" || true)
[ -z "$left" ] && pass "nothing of the service left running" || fail "processes of uid $uid left: $left"
journalctl -u scoped-server -o cat | grep -E '"level":"(ERROR|FATAL)"|"level":"WARN"' | head -5 | sed 's/^/INFO journal: /'
suppressed=$(journalctl -o cat | grep 'Suppressed .* from scoped-server' || true)
[ -z "$suppressed" ] && pass "journald dropped no line of the service ($(journalctl -u scoped-server -o cat | wc -l) lines)" \
  || fail "journald rate-limited the service: $suppressed"
echo "RESULT failures=$failures"
exit $failures
EOF
chmod +x "$rootfs/root/check.sh"

echo "booting $rootfs"
log=$(mktemp)
# The unified cgroup hierarchy (cgroup v2, Debian 12's default) even on a host booted with the
# hybrid one, so the container is what a current Debian host gives the service.
SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 systemd-nspawn --boot --register=no --keep-unit --private-network -D "$rootfs" -M "$machine" \
  --bind-ro="$repo/node_modules:/opt/scoped-server/node_modules" \
  --bind-ro="$node_bin:/usr/bin/node" ${external_bind:+"$external_bind"} >"$log" 2>&1 </dev/null &
nspawn=$!
leader=
i=0
while [ -z "$leader" ] && [ $i -lt 100 ]; do sleep 0.1; leader=$(pgrep -P $nspawn || true); i=$((i + 1)); done
[ -n "$leader" ] || { cat "$log"; echo "systemd-nspawn did not start a container" >&2; exit 1; }
inside() { nsenter -t "$leader" -m -u -i -n -p -C -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin SYSTEMD_PAGER= "$@"; }
state=
i=0
while [ $i -lt 120 ]; do
  state=$(inside systemctl is-system-running 2>/dev/null || true)
  case "$state" in running | degraded) break ;; esac
  sleep 0.5; i=$((i + 1))
done
echo "container systemd: $(inside systemctl --version | head -1), system $state"
status=0
inside /root/check.sh "$load_seconds" "${EXTERNAL_PG:+external}" || status=$?
inside systemctl poweroff >/dev/null 2>&1 || true
wait $nspawn || true
rm -f "$log"
exit $status
