#!/usr/bin/env bash
# Builds the store's images from this repo: static binaries (glibc, crt-static) and
# FROM scratch, plus memcached from Debian's package. No image is pulled.
#   bazar-catalog:local  bazar-order:local  bazar-frontend:local  bazar-memcached:local
set -euo pipefail
cd "$(dirname "$0")/.."
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
if ! command -v memcached >/dev/null; then
    echo "memcached is not installed (apt-get install memcached); no memcached image" >&2
    exit 1
fi
ctx="$work/memcached"
mkdir -p "$ctx/rootfs/usr/bin" "$ctx/rootfs/etc"
cp "$(command -v memcached)" "$ctx/rootfs/usr/bin/memcached"
# The binary's shared libraries and the dynamic loader, at the paths it looks for them.
for lib in $(ldd "$(command -v memcached)" | grep -o '/[^ ]*'); do
    mkdir -p "$ctx/rootfs$(dirname "$lib")"
    cp -L "$lib" "$ctx/rootfs$lib"
done
echo "memcache:x:11211:11211::/:/usr/sbin/nologin" > "$ctx/rootfs/etc/passwd"
cp containers/Dockerfile.memcached "$ctx/Dockerfile"
docker build -q -t bazar-memcached:local "$ctx" >/dev/null
echo "built bazar-memcached:local"
docker images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep '^bazar-' | sort
