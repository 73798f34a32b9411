#!/usr/bin/env bash
# Starts the units under a real systemd (PID 1 in a container made with debootstrap and
# `docker import`, on a network this script creates), all five roles on one host, and
# checks the store through them: search and purchase, a graceful `systemctl stop` (exit 0),
# and `kill -9` answered by Restart=on-failure. The container cannot create namespaces, so
# systemd/container-dropin.conf relaxes the sandboxing that needs them (see that file).
# Removes only what it created, by name, even when it fails.
set -euo pipefail
cd "$(dirname "$0")/.."
C=bazar-e2e-systemd NET=bazar-e2e-systemd-net
root=target/systemd-rootfs
cleanup() {
    local rc=$?
    [ "$rc" = 0 ] || docker exec "$C" journalctl --no-pager -n 40 2>/dev/null || true
    docker rm -f "$C" >/dev/null 2>&1 || true
    docker network rm "$NET" >/dev/null 2>&1 || true
    exit "$rc"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
in_c() { docker exec "$C" "$@"; }

if [ ! -x "$root/sbin/init" ]; then
    echo "== debootstrap (Debian bookworm, minbase with systemd)"
    rm -rf "$root"
    debootstrap --variant=minbase --include=systemd,systemd-sysv bookworm "$root" http://deb.debian.org/debian >/dev/null
fi
echo "== static binaries, units and local environment files"
target=x86_64-unknown-linux-gnu
RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --target "$target" --bin bazar-catalog --bin bazar-order --bin bazar-frontend
cp "target/$target/release/bazar-"{catalog,order,frontend} "$root/usr/local/bin/"
cp systemd/*.service "$root/etc/systemd/system/"
mkdir -p "$root/etc/bazar"
printf 'BAZAR_ROLE=primary\nBAZAR_LISTEN=127.0.0.1:9000\nBAZAR_REPLICAS=http://127.0.0.1:9001\n' > "$root/etc/bazar/catalog-primary.env"
printf 'BAZAR_ROLE=replica\nBAZAR_LISTEN=127.0.0.1:9001\nBAZAR_PRIMARY=http://127.0.0.1:9000\n' > "$root/etc/bazar/catalog-replica.env"
for i in 1 2; do
    printf 'BAZAR_LISTEN=127.0.0.1:%s\nBAZAR_CATALOG=http://127.0.0.1:9000,http://127.0.0.1:9001\nBAZAR_PEERS=http://127.0.0.1:%s\n' \
        $((9001 + i)) $((9005 - i)) > "$root/etc/bazar/order-$i.env"
done
printf 'BAZAR_LISTEN=0.0.0.0:4200\nBAZAR_CATALOG=http://127.0.0.1:9000,http://127.0.0.1:9001\nBAZAR_ORDER=http://127.0.0.1:9002,http://127.0.0.1:9003\n' > "$root/etc/bazar/frontend.env"
# The store's token, as install.sh makes it: the units load it (LoadCredential=).
( umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$root/etc/bazar/token" )
units=(bazar-catalog@primary bazar-catalog@replica bazar-order@1 bazar-order@2 bazar-frontend)
for u in bazar-catalog@ bazar-order@ bazar-frontend; do
    mkdir -p "$root/etc/systemd/system/$u.service.d"
    cp systemd/container-dropin.conf "$root/etc/systemd/system/$u.service.d/container.conf"
done
for u in "${units[@]}"; do chroot "$root" systemctl enable --quiet "$u"; done
tar -C "$root" -c . | docker import - bazar-systemd:local >/dev/null

echo "== systemd as PID 1"
docker network create "$NET" >/dev/null
docker run -d --name "$C" --network "$NET" -e container=docker --tmpfs /run --tmpfs /run/lock --tmpfs /tmp \
    -v /sys/fs/cgroup:/sys/fs/cgroup:ro --stop-signal SIGRTMIN+3 bazar-systemd:local /sbin/init >/dev/null
ip=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$NET\").IPAddress}}" "$C")
for i in $(seq 1 150); do
    [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://$ip:4200/info/1")" = 200 ] && break
    sleep 0.2
done
for u in "${units[@]}"; do [ "$(in_c systemctl is-active "$u")" = active ] || fail "$u is not active"; done
echo "ok: ${#units[@]} units active under $(in_c systemctl --version | head -1)"
for u in "${units[@]}"; do
    in_c journalctl --no-pager -u "$u" | grep -q 'need `Authorization: Bearer <token>`' || fail "$u does not run with the token"
done
echo "ok: every unit runs with the token of /etc/bazar/token (LoadCredential=, BAZAR_TOKEN_FILE)"
curl -s -m 3 "http://$ip:4200/search/distributed%20systems" | grep -q "RPCs for Noobs" || fail search
[ "$(curl -s -o /dev/null -m 5 -w '%{http_code}' -X POST "http://$ip:4200/purchase/2")" = 200 ] || fail purchase
in_c grep -q "RPCs for Noobs" /var/lib/bazar-order-1/orders.csv /var/lib/bazar-order-2/orders.csv || fail "order not in a StateDirectory"
echo "ok: search and purchase through the units; the order is in a StateDirectory"
in_c systemctl stop bazar-order@1
[ "$(in_c systemctl show -p Result --value bazar-order@1)" = success ] || fail "graceful stop"
[ "$(in_c systemctl show -p ExecMainStatus --value bazar-order@1)" = 0 ] || fail "exit code after SIGTERM"
echo "ok: systemctl stop: SIGTERM, exit 0"
in_c sh -c 'kill -9 "$(systemctl show -p MainPID --value bazar-catalog@replica)"'
for i in $(seq 1 50); do [ "$(in_c systemctl show -p NRestarts --value bazar-catalog@replica)" -ge 1 ] && break; sleep 0.2; done
[ "$(in_c systemctl is-active bazar-catalog@replica)" = active ] || fail "not restarted after kill -9"
echo "ok: kill -9 of the replica: restarted by Restart=on-failure"
