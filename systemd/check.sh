#!/usr/bin/env bash
# Checks the units: `systemd-analyze verify` must print nothing at all, and each unit's
# `systemd-analyze security --offline=yes` exposure must be 2.0 or lower. Runs in a scratch
# root holding the units, the example environment files, this system's own units and the
# binaries (target/debug, built if missing), so it needs no install and changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v systemd-analyze >/dev/null || { echo "systemd-analyze is not installed (apt-get install systemd)" >&2; exit 1; }
for b in catalog order frontend; do [ -x "target/debug/bazar-$b" ] || cargo build --bin "bazar-$b"; done
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/local/bin" "$root/etc/bazar" "$root/etc/systemd/system" "$root/usr/lib/systemd"
cp -r /usr/lib/systemd/system "$root/usr/lib/systemd/"
for b in catalog order frontend; do cp "target/debug/bazar-$b" "$root/usr/local/bin/"; done
cp systemd/env/*.env "$root/etc/bazar/"
cp systemd/*.service "$root/etc/systemd/system/"
units=(bazar-catalog@primary.service bazar-catalog@replica.service bazar-order@1.service bazar-order@2.service bazar-frontend.service)
out=$(systemd-analyze verify --root="$root" "${units[@]}" 2>&1) || { echo "$out"; echo "FAIL: systemd-analyze verify" >&2; exit 1; }
[ -z "$out" ] || { echo "$out"; echo "FAIL: systemd-analyze verify printed warnings" >&2; exit 1; }
echo "systemd-analyze verify: ${#units[@]} units, no warnings"
for u in "${units[@]}"; do
    line=$(systemd-analyze security --offline=yes --root="$root" "$u" 2>&1 | grep 'Overall exposure level')
    level=$(echo "$line" | grep -oE '[0-9]+\.[0-9]+' | head -1)
    echo "$u: exposure $level"
    awk -v l="$level" 'BEGIN { exit !(l != "" && l <= 2.0) }' || { echo "FAIL: $u exposure $level > 2.0" >&2; exit 1; }
done
