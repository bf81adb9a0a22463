#!/usr/bin/env bash
# Daft on a local Ray cluster reads tierflow's cold Iceberg tables on a moto S3 server and
# checks its counts against tierflow's own. Not part of `make test`. See README.md here.
#
#   infra/scaleout/run.sh            # 5 days x ~600-750 workflows a day
#   DAYS=3 PER_DAY=200 infra/scaleout/run.sh
#   WORK=/tmp/somewhere KEEP=1 ...   # where the catalog, JSON results and logs go
#
# Exit status: 0 when every count agrees, non-zero otherwise. Ray and moto are stopped
# (by the process ids this script started) on every exit path.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
VENV=$HERE/.venv
DAYS=${DAYS:-5}
PER_DAY=${PER_DAY:-600}
WORK=${WORK:-$(mktemp -d /tmp/tierflow-scaleout.XXXXXX)}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)

now() { date +%s.%N; }
T_START=$(now)
declare -A SECONDS_OF
phase() { SECONDS_OF[$1]=$(python3 -c "print(round($(now) - $2, 1))"); echo "== $1: ${SECONDS_OF[$1]} s"; }

MOTO_PID=""
RAY_PID=""
stop_group() {  # stop_group NAME PID GRACE: TERM the process group PID leads, KILL after GRACE s
  local name=$1 pid=$2 grace=$3 t0
  kill -0 "$pid" 2>/dev/null || return 0
  t0=$(now)
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq $((grace * 10))); do
    pgrep -g "$pid" >/dev/null || break
    sleep 0.1
  done
  if pgrep -g "$pid" >/dev/null; then
    echo "== $name: still running after ${grace}s, SIGKILL to group $pid"
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  echo "== stopped $name (group $pid) in $(python3 -c "print(round($(now) - $t0, 1))") s"
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [[ -n $RAY_PID ]] && stop_group ray "$RAY_PID" 40
  [[ -n $MOTO_PID ]] && stop_group moto "$MOTO_PID" 10
  # Ray's session files (logs, sockets): kept on failure for a look, else removed.
  [[ -n ${RAY_TMP:-} && $rc -eq 0 ]] && rm -rf "$RAY_TMP"
  echo "== work dir: $WORK"
  if [[ $rc -eq 0 ]]; then echo "== PASS"; else echo "== FAIL (exit $rc)"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Every TCP socket the Ray cluster's processes listen on must be a loopback one.
check_loopback() {
  command -v ss >/dev/null || return 0
  local pids
  pids=$(pgrep -g "$RAY_PID" | paste -sd'|')
  if ss -ltnpH | grep -E "pid=($pids)," | awk '{print $4}' |
    grep -vE '^(127\.0\.0\.1|\[::ffff:127\.0\.0\.1\]|\[::1\]):'; then
    echo "ray listens on a non-loopback address (above)"; exit 1
  fi
  echo "== ray listening sockets: $(ss -ltnpH | grep -cE "pid=($pids),"), all on loopback"
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# 1. Environments: tierflow's (pyarrow 26) and this one (daft 0.7 needs pyarrow<26).
t=$(now)
make -C "$ROOT" --no-print-directory .venv/.linked >/dev/null
MAIN_PY=$ROOT/.venv/bin/python
if [[ ! -f $VENV/.installed || $HERE/requirements.txt -nt $VENV/.installed ]]; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  echo "== creating $VENV (pip output in $WORK/pip.log)"
  { "$VENV/bin/python" -m pip install --upgrade pip &&
    "$VENV/bin/python" -m pip install -r "$HERE/requirements.txt"; } >"$WORK/pip.log" 2>&1 ||
    { tail -30 "$WORK/pip.log"; exit 1; }
  touch "$VENV/.installed"
fi
"$VENV/bin/python" - <<'PY'
import daft, pyarrow, pyiceberg, ray
assert daft.__version__.startswith("0.7."), f"daft {daft.__version__}: expected 0.7.x"
print(f"== scaleout venv: daft {daft.__version__}, ray {ray.__version__}, "
      f"pyarrow {pyarrow.__version__}, pyiceberg {pyiceberg.__version__}")
PY
"$MAIN_PY" -c 'import pyarrow, pyiceberg; print(f"== tierflow venv: pyarrow {pyarrow.__version__}, pyiceberg {pyiceberg.__version__}")'
phase venvs "$t"

# 2. moto as an S3 server on loopback only, in its own process group.
t=$(now)
MOTO_PORT=$(free_port)
setsid "$MAIN_PY" -m moto.server -H 127.0.0.1 -p "$MOTO_PORT" >"$WORK/moto.log" 2>&1 </dev/null &
MOTO_PID=$!
ENDPOINT=http://127.0.0.1:$MOTO_PORT
for _ in $(seq 100); do
  curl -sf -o /dev/null "$ENDPOINT/moto-api/" && break
  kill -0 "$MOTO_PID" || { cat "$WORK/moto.log"; exit 1; }
  sleep 0.1
done
echo "== moto on $ENDPOINT (pid $MOTO_PID)"
phase moto_start "$t"

# 3. Populate: the facade runs workflows, tier() writes warm, then moves warm to cold.
t=$(now)
(cd "$HERE" && "$MAIN_PY" populate.py --work "$WORK" --endpoint "$ENDPOINT" \
  --days "$DAYS" --per-day "$PER_DAY")
phase populate "$t"

# 4. tierflow's own counts (pyiceberg plan_files + pyarrow, main venv) -> expected.json.
t=$(now)
(cd "$HERE" && "$MAIN_PY" tierflow_counts.py --work "$WORK")
phase tierflow_counts "$t"

# 5. A local Ray cluster bound to 127.0.0.1, token auth, its own process group.
t=$(now)
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=token
# Nothing to drain on this throwaway cluster: without this, SIGTERM waits 30 s (Ray 2.59).
export RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0
# Ray workers take their environment from the raylet, not from the driver: no progress bars.
export DAFT_PROGRESS_BAR=0 RAY_TQDM=0
RAY_AUTH_TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
export RAY_AUTH_TOKEN  # in this environment only: nothing is written to ~/.ray
GCS_PORT=$(free_port)
CLIENT_PORT=$(free_port)
RAY_TMP=$(mktemp -d /tmp/tfray.XXXXXX)  # short: Ray's unix socket paths must stay < 108 chars
setsid "$VENV/bin/ray" start --head --block \
  --node-ip-address=127.0.0.1 --port="$GCS_PORT" --ray-client-server-port="$CLIENT_PORT" \
  --include-dashboard=false --dashboard-host=127.0.0.1 \
  --num-cpus=2 --object-store-memory=1000000000 \
  --temp-dir="$RAY_TMP" --disable-usage-stats >"$WORK/ray.log" 2>&1 </dev/null &
RAY_PID=$!
for _ in $(seq 600); do
  grep -q "Ray runtime started" "$WORK/ray.log" && break
  kill -0 "$RAY_PID" 2>/dev/null || { tail -20 "$WORK/ray.log"; exit 1; }
  sleep 0.1
done
grep -q "Ray runtime started" "$WORK/ray.log" || { tail -20 "$WORK/ray.log"; exit 1; }
echo "== ray on 127.0.0.1:$GCS_PORT (pid $RAY_PID, temp $RAY_TMP)"
check_loopback  # right after start; again after the read, when the workers exist too
phase ray_start "$t"

# 6. Daft on Ray reads both tables through catalog.sqlite and compares.
t=$(now)
set +e
(cd "$HERE" && DAFT_PROGRESS_BAR=0 RAY_TQDM=0 "$VENV/bin/python" read_cold.py \
  --work "$WORK" --ray-address "127.0.0.1:$GCS_PORT" 2>"$WORK/read_cold.stderr")
READ_RC=$?
set -e
phase daft_read "$t"
check_loopback
if [[ $READ_RC -ne 0 ]]; then tail -30 "$WORK/read_cold.stderr"; fi

# 7. Negative control: the same read against counts with one value changed must fail,
#    so a pass above means the numbers were compared (NEGATIVE_CONTROL=0 skips it).
if [[ $READ_RC -eq 0 && ${NEGATIVE_CONTROL:-1} != 0 ]]; then
  t=$(now)
  python3 - "$WORK" <<'PY'
import json, sys, pathlib
work = pathlib.Path(sys.argv[1])
doc = json.loads((work / "expected.json").read_text())
day = sorted(doc["history"]["by_finished_date"])[-1]
doc["history"]["by_finished_date"][day] += 1  # one event more on the last day
(work / "expected-altered.json").write_text(json.dumps(doc))
PY
  set +e
  (cd "$HERE" && DAFT_PROGRESS_BAR=0 RAY_TQDM=0 "$VENV/bin/python" read_cold.py \
    --work "$WORK" --ray-address "127.0.0.1:$GCS_PORT" --expected "$WORK/expected-altered.json" \
    --out "$WORK/daft-negative.json" >"$WORK/negative.out" 2>>"$WORK/read_cold.stderr")
  NEG_RC=$?
  set -e
  grep -A3 '^MISMATCH' "$WORK/negative.out" | sed 's/^/   negative control: /'
  if [[ $NEG_RC -eq 1 ]] && grep -q "^MISMATCH" "$WORK/negative.out"; then
    echo "== negative control: an altered count is reported (exit 1), as it must be"
  else
    echo "== negative control FAILED: exit $NEG_RC on altered counts"; READ_RC=1
  fi
  phase negative_control "$t"
fi

TOTAL=$(python3 -c "print(round($(now) - $T_START, 1))")
{
  printf '{"days": %s, "per_day": %s, "total": %s' "$DAYS" "$PER_DAY" "$TOTAL"
  for k in "${!SECONDS_OF[@]}"; do printf ', "%s": %s' "$k" "${SECONDS_OF[$k]}"; done
  printf '}\n'
} >"$WORK/timings.json"
echo "== timings (s): $(cat "$WORK/timings.json")"
exit "$READ_RC"
