#!/usr/bin/env bash
# Installs Bazar on a VM under systemd (run as root, from a checkout):
#   binaries in /usr/local/bin, units in /etc/systemd/system, example environment files in
#   /etc/bazar (existing ones are kept). Then edit /etc/bazar/*.env and enable the roles
#   this VM runs, e.g. `systemctl enable --now bazar-catalog@primary`.
# memcached uses the distribution's own unit: `apt-get install memcached`, and set its
# listen address in /etc/memcached.conf (-l) to one the front end and the primary reach.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
cargo build --release --bin bazar-catalog --bin bazar-order --bin bazar-frontend
install -m 0755 target/release/bazar-catalog target/release/bazar-order target/release/bazar-frontend /usr/local/bin/
install -m 0644 systemd/*.service /etc/systemd/system/
install -d -m 0755 /etc/bazar
for f in systemd/env/*.env; do
    dest=/etc/bazar/$(basename "$f")
    [ -e "$dest" ] || install -m 0640 "$f" "$dest"
done
systemctl daemon-reload
cat <<'MSG'
Installed. Edit /etc/bazar/*.env (hosts, BAZAR_TOKEN), then on each VM enable its role:
  systemctl enable --now bazar-catalog@primary    # catalog-1 (reads /etc/bazar/catalog-primary.env)
  systemctl enable --now bazar-catalog@replica    # catalog-2
  systemctl enable --now bazar-order@1            # order-1   (and bazar-order@2 on order-2)
  systemctl enable --now bazar-frontend           # the front end
Data lives in /var/lib/bazar-<role>-<instance> (StateDirectory); logs: journalctl -u 'bazar-*'.
MSG
