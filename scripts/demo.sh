#!/usr/bin/env bash
# Runs every runbook in notebooks/ against the lab in $1, archiving runs in $2.
set -euo pipefail
lab="$1"
runs="$2"
bin="${BIN:-.venv/bin}"
# the lab's servers ask for a password: it is in the lab's own 0600 password file
PGPASSFILE="$(cd "$lab" && pwd)/.pgpass"
export PGPASSFILE
shopt -s nullglob
notebooks=(notebooks/*.ipynb)
if [[ ${#notebooks[@]} -eq 0 ]]; then
    echo "no notebooks yet"
    exit 0
fi

workload_pid=""
stop_workload() { [[ -n "$workload_pid" ]] && kill "$workload_pid" 2>/dev/null && wait "$workload_pid" || true; }
trap stop_workload EXIT

for nb in "${notebooks[@]}"; do
    name=$(basename "$nb" .ipynb)
    params="$lab/parameters/$name.yaml"
    if [[ ! -f "$params" ]]; then
        echo "skipping $name: the lab has no $params"
        continue
    fi
    server=here
    [[ "$name" == warm_standby ]] && server=primary
    if [[ "$name" == bucardo_retire ]]; then
        # the application moves to the server that stays; the retire's preflight wants the one
        # that goes to have had no application write for a few seconds
        server=there
        sleep 6
    fi
    echo "== $name (with the lab workload writing to $server)"
    "$bin/runbook" lab workload --dir "$lab" --server "$server" --seconds 0 --rate 10 \
        > "$lab/workload/demo-$name.log" 2>&1 &
    workload_pid=$!
    "$bin/runbook" run "$name" -f "$params" --archive "$runs"
    stop_workload
    workload_pid=""
done
echo
echo "executed notebooks are in $runs/:"
ls -1d "$runs"/*/ | tail -n "${#notebooks[@]}"
