#!/usr/bin/env bash
# Build an ipftrace2 binary to run beside ipft-web in bench/bench.py (IPFT2=...).
#   bench/build-ipftrace2.sh SOURCE_DIR [OUT]      OUT defaults to artifacts/ipftrace2
# SOURCE_DIR: a checkout of https://github.com/YutaroHayakawa/ipftrace2 (its build normally runs in
# the project's Alpine builder image; this builds it with Debian's packages, dynamically linked).
set -euo pipefail
SRC=${1:?usage: build-ipftrace2.sh SOURCE_DIR [OUT]}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${2:-$REPO/artifacts/ipftrace2}
[ -f "$SRC/src/Makefile" ] || { echo "build-ipftrace2.sh: $SRC is not an ipftrace2 checkout" >&2; exit 2; }
pkgs=(clang libbpf-dev libelf-dev zlib1g-dev libpcre2-dev liblua5.4-dev xxd make)
missing=()
for p in "${pkgs[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$SRC/src" "$work/"
multiarch=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
arch=$(uname -m | sed 's/x86_64/x86/; s/aarch64/arm64/')
make -C "$work/src" ipft \
    CFLAGS="-g -O2 -Wall -I compat -I compat/uapi -I/usr/include/lua5.4" LDFLAGS="" \
    LDLIBS="-lbpf -lz -lelf -lpcre2-8 -llua5.4 -lpthread -ldl -lm" \
    BPF_CFLAGS="-g -O3 -I compat -I/usr/include/$multiarch -D__$(uname -m)__ -target bpf -D__TARGET_ARCH_$arch"
mkdir -p "$(dirname "$OUT")"
cp "$work/src/ipft" "$OUT"
echo "built $OUT"
