#!/usr/bin/env bash
# Installs Bazar on a VM under systemd (run as root, from a checkout):
#   binaries in /usr/local/bin, units in /etc/systemd/system, example environment files in
#   /etc/bazar (existing ones are kept), and the store's token /etc/bazar/token (root's,
#   0600; made with 32 random bytes unless it exists: copy the first machine's to the
#   others before starting them, every service of a store needs the same one; or set
#   BAZAR_TOKEN_FROM=<file> to install that one). Then edit /etc/bazar/*.env and enable the
#   roles this VM runs, e.g. `systemctl enable --now bazar-catalog@primary`.
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
    # An env file kept from an older install may still set the shipped placeholder token,
    # which the services refuse (and BAZAR_TOKEN with the units' BAZAR_TOKEN_FILE is an
    # error): say so rather than leave a unit that will not start.
    if grep -q '^BAZAR_TOKEN=' "$dest"; then
        echo "warning: $dest sets BAZAR_TOKEN; remove that line (the token now comes from /etc/bazar/token)" >&2
    fi
done
# The token: systemd hands it to each unit (LoadCredential=token:/etc/bazar/token).
if [ -n "${BAZAR_TOKEN_FROM:-}" ]; then
    install -m 0600 -o root -g root "$BAZAR_TOKEN_FROM" /etc/bazar/token
    echo "installed the token from $BAZAR_TOKEN_FROM as /etc/bazar/token"
elif [ ! -s /etc/bazar/token ]; then
    ( umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > /etc/bazar/token.tmp && mv /etc/bazar/token.tmp /etc/bazar/token )
    echo "made a new token in /etc/bazar/token (0600): copy it to every other machine of this store"
else
    chmod 0600 /etc/bazar/token
    echo "kept the token in /etc/bazar/token"
fi
systemctl daemon-reload
cat <<'MSG'
Installed. Edit /etc/bazar/*.env (hosts); every machine of the store needs the same
/etc/bazar/token (scp it from the first, mode 0600, owner root). Then enable each VM's role:
  systemctl enable --now bazar-catalog@primary    # catalog-1 (reads /etc/bazar/catalog-primary.env)
  systemctl enable --now bazar-catalog@replica    # catalog-2
  systemctl enable --now bazar-order@1            # order-1   (and bazar-order@2 on order-2)
  systemctl enable --now bazar-frontend           # the front end
Data lives in /var/lib/bazar-<role>-<instance> (StateDirectory); logs: journalctl -u 'bazar-*'.
MSG
