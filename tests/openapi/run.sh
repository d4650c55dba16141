#!/usr/bin/env bash
# schemathesis against a live `rill serve`, in auth modes `none` and `jwt`: every operation of
# GET /openapi.json, every check (no 5xx; statuses, content types, headers and bodies as the
# document says; invalid input refused, valid input accepted; auth not ignored), all phases
# (examples, coverage, fuzzing, stateful).
#
# Env: RILL_BIN (default target/debug/rill), RILL_OPENAPI_PYTHON (default tests/openapi/.venv),
# RILL_OPENAPI_EXAMPLES (test cases per operation and phase, default 50),
# RILL_OPENAPI_MODES (default "none jwt"). Exits non-zero on any failure.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
RILL_BIN="${RILL_BIN:-$ROOT/target/debug/rill}"
PY="${RILL_OPENAPI_PYTHON:-$HERE/.venv/bin/python}"
EXAMPLES="${RILL_OPENAPI_EXAMPLES:-50}"
MODES="${RILL_OPENAPI_MODES:-none jwt}"

work="$(mktemp -d)"
server=""
cleanup() {
    if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# Starts rill on a free port with a fresh SQLite file; sets $base. Streams end after 0.25 s
# (`--max-stream-duration`) so that schemathesis, which reads each body to its end, never
# waits on an open stream; the demo bot answers at once and fast.
start_rill() { # mode
    local log="$work/rill-$1.log"
    local args=(serve --listen 127.0.0.1:0 --database "sqlite://$work/rill-$1.db?mode=rwc"
        --max-stream-duration 250ms --heartbeat 100ms
        --demo-first-token-delay 0ms --demo-tokens-per-second 2000)
    if [ "$1" = jwt ]; then args+=(--auth jwt); fi
    : >"$log"
    env -u OPENAI_API_KEY -u ANTHROPIC_API_KEY "$RILL_BIN" "${args[@]}" >"$log" 2>&1 &
    server=$!
    for _ in $(seq 1 300); do
        base="$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -o 'rill is listening.*address=[^ ]*' | grep -o 'address=[^ ]*' | head -n1 | cut -d= -f2 || true)"
        if [ -n "$base" ]; then base="http://$base"; return 0; fi
        if ! kill -0 "$server" 2>/dev/null; then cat "$log" >&2; return 1; fi
        sleep 0.1
    done
    echo "rill did not start:" >&2
    cat "$log" >&2
    return 1
}

stop_rill() {
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    server=""
}

# One schemathesis run (hard-capped at 10 minutes); a failure is remembered, not fatal at once.
status=0
schemathesis() { # label, extra arguments...
    local label="$1"
    shift
    started=$SECONDS
    if ! (cd "$HERE" && timeout 600 "$PY" -m schemathesis.cli --config-file "$HERE/schemathesis.toml" \
        run "$base/openapi.json" --checks all --workers 1 --seed 1 \
        --request-timeout 10 --max-failures 50 "$@"); then
        status=1
        echo "schemathesis found failures ($label); the server's log:" >&2
        tail -n 50 "$work/rill-$mode.log" >&2
    fi
    echo "$label: $((SECONDS - started)) s"
}

for mode in $MODES; do
    auth=()
    if [ "$mode" = jwt ]; then
        RILL_JWT_SECRET="$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"
        export RILL_JWT_SECRET
        token="$("$RILL_BIN" token --sub schemathesis --publish '*' --subscribe '*' --ttl 1h)"
        auth=(--header "Authorization: Bearer $token")
    fi
    start_rill "$mode"
    printf '\n--- schemathesis, auth mode %s, every operation, %s examples each, against %s\n' "$mode" "$EXAMPLES" "$base"
    schemathesis "auth mode $mode" --max-examples "$EXAMPLES" "${auth[@]}"
    # Clients send no Accept (schemathesis neither) unless they want a stream: the answers'
    # streamed styles get runs of their own, with the Accept a streaming client sends.
    for accept in text/event-stream text/plain; do
        printf '\n--- schemathesis, auth mode %s, the answers with Accept: %s\n' "$mode" "$accept"
        schemathesis "auth mode $mode, Accept: $accept" --max-examples "$(( (EXAMPLES + 4) / 5 ))" \
            --include-path-regex '^/api/(chats|chats/\{id\}/(messages|regenerate)|ai-sdk/chat)$' \
            --header "Accept: $accept" "${auth[@]}"
    done
    stop_rill
done
exit "$status"
