# Shell helpers shared by the end-to-end scripts (containers/e2e.sh, containers/swarm-e2e.sh),
# which source this file after changing to the repository's root. Defines functions only.

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }
# status URL [seconds] -> HTTP status (000 when no answer)
status() { curl -s -o /dev/null -m "${2:-5}" -w '%{http_code}' "$1" || true; }
# new_token FILE: a new random token (32 bytes from the kernel, in hex) written to FILE,
# mode 0600, unless FILE holds one already; the value is never printed. Docker secrets
# (containers/compose.yaml, containers/stack.yaml) and the containers' BAZAR_TOKEN_FILE
# read it. Every service of a store shares it.
new_token() {
    [ -s "$1" ] && return 0
    ( umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$1.tmp.$$" && mv "$1.tmp.$$" "$1" )
}
# wait_for seconds description command...: runs the command every WAIT_STEP seconds
# (default 0.2) until it succeeds; fails with the description when the time is up.
wait_for() {
    local until=$(( $(date +%s) + $1 )) what=$2; shift 2
    until "$@"; do
        [ "$(date +%s)" -lt "$until" ] || fail "timed out waiting for: $what"
        sleep "${WAIT_STEP:-0.2}"
    done
}
