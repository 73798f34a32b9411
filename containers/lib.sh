# Shell helpers shared by the end-to-end scripts (containers/e2e.sh, containers/swarm-e2e.sh),
# which source this file after changing to the repository's root. Defines functions only.

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }
# status URL [seconds] -> HTTP status (000 when no answer)
status() { curl -s -o /dev/null -m "${2:-5}" -w '%{http_code}' "$1" || true; }
# wait_for seconds description command...: runs the command every WAIT_STEP seconds
# (default 0.2) until it succeeds; fails with the description when the time is up.
wait_for() {
    local until=$(( $(date +%s) + $1 )) what=$2; shift 2
    until "$@"; do
        [ "$(date +%s)" -lt "$until" ] || fail "timed out waiting for: $what"
        sleep "${WAIT_STEP:-0.2}"
    done
}
