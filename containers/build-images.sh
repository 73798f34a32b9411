#!/usr/bin/env bash
# Builds the store's images from this repo: static binaries (glibc, crt-static) and
# FROM scratch, plus memcached, etcd and HAProxy from Debian's packages. No image is pulled.
#   bazar-catalog:local  bazar-order:local  bazar-frontend:local  bazar-memcached:local
#   bazar-etcd:local  bazar-haproxy:local (the Swarm stack's load balancer; built only where
#   haproxy is installed, as only containers/stack.yaml needs it)
# and, when it is missing, the store's token for compose.yaml and stack.yaml:
# containers/secrets/bazar_token (random; never committed).
set -euo pipefail
cd "$(dirname "$0")/.."
# new_token
source containers/lib.sh
target=x86_64-unknown-linux-gnu
echo "== static release build ($target, crt-static)"
RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --target "$target" \
    --bin bazar-catalog --bin bazar-order --bin bazar-frontend
work=target/images
rm -rf "$work" && mkdir -p "$work"
for role in catalog:9000 order:9002 frontend:4200; do
    name=${role%%:*} port=${role##*:}
    ctx="$work/$name"
    mkdir -p "$ctx/data"
    cp "target/$target/release/bazar-$name" "$ctx/"
    strip "$ctx/bazar-$name"
    cp containers/Dockerfile "$ctx/Dockerfile"
    docker build -q -t "bazar-$name:local" --build-arg "BIN=bazar-$name" --build-arg "PORT=$port" "$ctx" >/dev/null
    echo "built bazar-$name:local"
done
# A Debian program, its shared libraries and the dynamic loader (at the paths it looks for
# them) and a passwd line for the user it runs as, in build context $2.
debian_rootfs() { # program context user:uid
    local program ctx=$2
    program=$(command -v "$1")
    mkdir -p "$ctx/rootfs/usr/bin" "$ctx/rootfs/etc" "$ctx/data"
    cp "$program" "$ctx/rootfs/usr/bin/$1"
    for lib in $(ldd "$program" | grep -o '/[^ ]*'); do
        mkdir -p "$ctx/rootfs$(dirname "$lib")"
        cp -L "$lib" "$ctx/rootfs$lib"
    done
    echo "${3%%:*}:x:${3##*:}:${3##*:}::/:/usr/sbin/nologin" > "$ctx/rootfs/etc/passwd"
}
for dep in memcached:memcached:memcache:11211 etcd:etcd-server:etcd:2379; do
    IFS=: read -r program package user uid <<<"$dep"
    if ! command -v "$program" >/dev/null; then
        echo "$program is not installed (apt-get install $package); no $program image" >&2
        exit 1
    fi
    ctx="$work/$program"
    debian_rootfs "$program" "$ctx" "$user:$uid"
    cp "containers/Dockerfile.$program" "$ctx/Dockerfile"
    docker build -q -t "bazar-$program:local" "$ctx" >/dev/null
    echo "built bazar-$program:local"
done
if command -v haproxy >/dev/null; then
    ctx="$work/haproxy"
    debian_rootfs haproxy "$ctx" haproxy:4200
    cp containers/Dockerfile.haproxy "$ctx/Dockerfile"
    cp containers/haproxy.cfg "$ctx/"
    docker build -q -t bazar-haproxy:local "$ctx" >/dev/null
    echo "built bazar-haproxy:local"
else
    echo "haproxy is not installed (apt-get install haproxy); no bazar-haproxy image (only the Swarm stack needs it)"
fi
docker images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep '^bazar-' | sort
# The token of the store containers/compose.yaml (and by default containers/stack.yaml)
# runs: made once, kept on later builds, never committed (.gitignore). compose mounts the
# file as it is into services that run as uid 10001, so it is 0644, in a 0700 directory
# that keeps the host's other users out.
install -d -m 0700 containers/secrets
new_token containers/secrets/bazar_token
chmod 0644 containers/secrets/bazar_token
echo "the store's token (a Docker secret for compose.yaml and stack.yaml): containers/secrets/bazar_token"
