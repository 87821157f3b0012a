#!/usr/bin/env bash
# Build the container image (Dockerfile) and smoke-test it, on a machine with no image registry and
# no container engine: podman/buildah build it with --isolation=chroot from a debian:bookworm-slim
# base made locally with debootstrap; its root file system is then exported and run with chroot.
#
#   sudo scripts/test-image.sh [--fresh] [--from-git] [--keep] [--no-trace]
#
# Takes minutes (not part of `make test`). Prints the build time and the image size.
set -euo pipefail

SRC="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${IPFT_IMAGE_WORK:-/var/tmp/ipft-image}"
IMAGE="${IPFT_IMAGE:-localhost/ipft-web:test}"
BASE="debian:bookworm-slim"
MIRROR="${IPFT_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
FROM_GIT=0 KEEP=0 TRACE=1 FRESH=0

usage() {
    cat <<EOF
usage: sudo scripts/test-image.sh [--fresh] [--from-git] [--keep] [--no-trace]

  --fresh      remake the base image and build without the layer cache (honest build time)

  --from-git   build from the committed tree (git archive HEAD) instead of the work tree
  --keep       keep the exported root file system in $WORK/rootfs
  --no-trace   skip the live trace through the image (needs BTF, BPF and iptables)
env: IPFT_IMAGE (tag, default $IMAGE), IPFT_IMAGE_WORK (scratch dir, default $WORK),
     IPFT_PIP_CA (CA bundle handed to pip as a build secret, default this host's)
EOF
}

while (($#)); do
    case "$1" in
        --fresh) FRESH=1 ;;
        --from-git) FROM_GIT=1 ;;
        --keep) KEEP=1 ;;
        --no-trace) TRACE=0 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
    shift
done

say() { printf '\n== %s\n' "$*"; }
die() { printf 'test-image: error: %s\n' "$*" >&2; exit 1; }
((EUID == 0)) || die "run as root (podman build, chroot and mounts need it)"

PASSED=0 FAILED=0 FAILURES=()
check() {  # check NAME CMD...: run, count, never stop the script
    local name="$1"
    shift
    printf -- '-- %s\n' "$name"
    if "$@"; then
        PASSED=$((PASSED + 1))
        printf 'ok: %s\n' "$name"
    else
        FAILED=$((FAILED + 1))
        FAILURES+=("$name")
        printf 'FAILED: %s\n' "$name"
    fi
}

ROOTFS="$WORK/rootfs"
MOUNTS=()
NETNS=""
CTR=""
cleanup() {
    local i
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
        umount -- "${MOUNTS[i]}" 2>/dev/null || umount -l -- "${MOUNTS[i]}" 2>/dev/null || true
    done
    if [[ -n "$NETNS" ]]; then
        ip netns del "$NETNS" 2>/dev/null || true
    fi
    if [[ -n "$CTR" ]]; then
        podman rm -f "$CTR" >/dev/null 2>&1 || true
    fi
    if ((!KEEP)) && [[ -d "$ROOTFS" ]] && ! grep -q " $ROOTFS/" /proc/mounts; then
        rm -rf -- "$ROOTFS"
    fi
    if [[ -n "${CONTEXT_TMP:-}" ]]; then
        rm -rf -- "$CONTEXT_TMP"
    fi
}
trap cleanup EXIT

# ---- tools ---------------------------------------------------------------------------------------
need=()
for tool in podman:podman buildah:buildah debootstrap:debootstrap; do
    command -v "${tool%%:*}" >/dev/null || need+=("${tool#*:}")
done
if ((${#need[@]})); then
    say "installing ${need[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
fi
mkdir -p -- "$WORK"
T0=$SECONDS

# ---- base image ----------------------------------------------------------------------------------
if ((FRESH)); then
    podman image rm -f "$IMAGE" "$BASE" >/dev/null 2>&1 || true
fi
if podman image exists "$BASE"; then
    say "base image $BASE: present"
else
    say "base image $BASE: debootstrap --variant=minbase bookworm (no registry here)"
    base_root="$WORK/base-root"
    rm -rf -- "$base_root"
    debootstrap --variant=minbase bookworm "$base_root" "$MIRROR"
    # Make it look like the slim image: deb822 sources with updates and security, no docs/man/locales.
    rm -f -- "$base_root/etc/apt/sources.list"
    cat >"$base_root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${MIRROR%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    cat >"$base_root/etc/dpkg/dpkg.cfg.d/slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EOF
    cat >"$base_root/etc/apt/apt.conf.d/slim-clean" <<'EOF'
APT::Install-Recommends "false";
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
EOF
    find "$base_root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    rm -rf -- "$base_root"/usr/share/man/* "$base_root"/usr/share/info/* "$base_root"/usr/share/locale/*
    rm -rf -- "$base_root"/var/cache/apt/archives/*.deb "$base_root"/var/cache/apt/*.bin "$base_root"/var/lib/apt/lists/*
    tar -C "$base_root" -c . | podman import --change 'CMD ["bash"]' - "$BASE"
    rm -rf -- "$base_root"
fi
T_BASE=$((SECONDS - T0))

# ---- build ---------------------------------------------------------------------------------------
CONTEXT="$SRC"
if ((FROM_GIT)); then
    CONTEXT_TMP="$(mktemp -d "$WORK/context.XXXXXX")"
    git -C "$SRC" archive HEAD | tar -x -C "$CONTEXT_TMP"
    CONTEXT="$CONTEXT_TMP"
fi
say "podman build --isolation=chroot -t $IMAGE $CONTEXT"
T1=$SECONDS
secret=()
ca="${IPFT_PIP_CA:-/etc/ssl/certs/ca-certificates.crt}"  # this host's CAs, for a TLS-intercepting proxy
[[ -s "$ca" ]] && secret=(--secret "id=pip-ca,src=$ca")
cache=(--layers)
((FRESH)) && cache=(--no-cache)
podman build --isolation=chroot --pull=never "${cache[@]}" ${secret[@]+"${secret[@]}"} \
    -t "$IMAGE" -f "$CONTEXT/Dockerfile" "$CONTEXT"
T_BUILD=$((SECONDS - T1))
SIZE_BYTES="$(podman image inspect --format '{{.Size}}' "$IMAGE")"
SIZE_MB=$((SIZE_BYTES / 1000000))
BASE_MB=$(($(podman image inspect --format '{{.Size}}' "$BASE") / 1000000))

# ---- image metadata ------------------------------------------------------------------------------
say "image metadata"
entrypoint="$(podman image inspect --format '{{json .Config.Entrypoint}}' "$IMAGE")"
cmd="$(podman image inspect --format '{{json .Config.Cmd}}' "$IMAGE")"
printf 'entrypoint %s cmd %s\n' "$entrypoint" "$cmd"
check "entry point is ipft-web" [ "$entrypoint" = '["/opt/ipft-web/venv/bin/ipft-web"]' ]
check "default args --host 127.0.0.1 --port 8080" [ "$cmd" = '["--host","127.0.0.1","--port","8080"]' ]

# ---- export the root file system (podman run fails on this machine's rlimits) --------------------
say "exporting the image's root file system to $ROOTFS"
rm -rf -- "$ROOTFS"
mkdir -p -- "$ROOTFS"
CTR="$(podman create "$IMAGE")"
podman export "$CTR" | tar -x -C "$ROOTFS"
podman rm "$CTR" >/dev/null
CTR=""

in_image() { chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin HOME=/root "$@"; }

say "static checks (chroot, nothing mounted)"
check "bcc imports (python3-bpfcc through --system-site-packages)" \
    in_image /opt/ipft-web/venv/bin/python -c 'import bcc; bcc.BPF; print("bcc", bcc.__version__)'
check "ipft_web imports from the venv" \
    in_image /opt/ipft-web/venv/bin/python -c 'import ipft_web, ipft_web.doctor; print(ipft_web.__file__)'
check "ipft --help" in_image ipft --help
check "ipft-web --help" in_image ipft-web --help
check "fallback kernel headers in /usr/src" bash -c "compgen -G '$ROOTFS/usr/src/linux-headers-*-common/include/linux/skbuff.h'"
check "iptables in the image" in_image iptables --version

# ---- with the host's kernel: /proc, /sys, /dev bound in (not /usr/src: the image's headers) -------
bind() {  # bind SRC [ro]: mount the host's SRC at the same place in the root file system
    local dst="$ROOTFS$1"
    mkdir -p -- "$dst"
    mount --bind -- "$1" "$dst"
    MOUNTS+=("$dst")
    if [[ "${2:-}" == ro ]]; then
        mount -o remount,bind,ro -- "$dst"
    fi
}
say "host kernel checks (chroot with /proc, /sys, /dev bound in)"
bind /proc
bind /sys ro
bind /dev
[[ -d /lib/modules ]] && bind /lib/modules ro
check "doctor runs in the image" bash -c "chroot '$ROOTFS' /opt/ipft-web/venv/bin/python -m ipft_web.doctor; [ \$? -le 1 ]"
check "ipft -l lists skb functions/tracepoints" bash -c \
    "chroot '$ROOTFS' /usr/local/bin/ipft -l -r 'skb' >'$WORK/list.out' 2>'$WORK/list.err'; rc=\$?; cat '$WORK/list.err'; head -5 '$WORK/list.out'; [ \$rc -eq 0 ] && [ -s '$WORK/list.out' ]"

web_ok() {  # the image's entry point serves the API on loopback, behind the token
    local port=$((18000 + RANDOM % 2000)) token="image-smoke-test-token-0123456789" pid i
    local log="$WORK/web.log"
    chroot "$ROOTFS" /opt/ipft-web/venv/bin/ipft-web --host 127.0.0.1 --port "$port" --token "$token" >"$log" 2>&1 &
    pid=$!
    for ((i = 0; i < 60; i++)); do
        grep -q 'open http' "$log" && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    sleep 1
    /usr/bin/python3 - "$port" "$token" <<'PY'
import json, sys, urllib.request, urllib.error
port, token = sys.argv[1], sys.argv[2]
url = f"http://127.0.0.1:{port}/api/status"
try:
    urllib.request.urlopen(url, timeout=10)
    sys.exit("status answered without a token")
except urllib.error.HTTPError as e:
    assert e.code == 401, e.code
req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
body = json.load(urllib.request.urlopen(req, timeout=10))
print("GET /api/status:", json.dumps(body)[:300])
PY
    local rc=$?
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" || true
    cat "$log"
    return "$rc"
}
check "ipft-web serves /api/status on loopback (401 without the token)" web_ok

if ((TRACE)); then
    # A marked ping inside a fresh network namespace of our own, traced from the image.
    NETNS="ipft-img-$$"
    ip netns add "$NETNS"
    ip -n "$NETNS" link set lo up
    ip netns exec "$NETNS" iptables -t raw -A OUTPUT -p icmp -d 127.0.0.2 -j MARK --set-mark 0x1f2e3d4c
    trace_ok() {
        local out="$WORK/trace.out" err="$WORK/trace.err" pid i
        chroot "$ROOTFS" /usr/local/bin/ipft -m 0x1f2e3d4c -o json --duration 60 >"$out" 2>"$err" &
        pid=$!
        for ((i = 0; i < 120; i++)); do  # wait for "tracing N functions" (compile + attach)
            grep -q '^tracing ' "$err" && break
            kill -0 "$pid" 2>/dev/null || break
            sleep 1
        done
        ip netns exec "$NETNS" ping -c 2 -i 0.2 -W 1 127.0.0.2 >/dev/null || true
        sleep 2
        kill -INT "$pid" 2>/dev/null || true
        wait "$pid" || true
        cat "$err"
        head -c 600 "$out"
        echo
        grep -Eq '"mark": ?523124044' "$out"
    }
    say "live trace from the image (image's own header tree, host BTF)"
    check "a marked ping is traced from inside the image" trace_ok
fi

say "summary"
printf 'base image %s: %s MB (%ss to make)\n' "$BASE" "$BASE_MB" "$T_BASE"
printf 'image %s: %s MB, built in %ss\n' "$IMAGE" "$SIZE_MB" "$T_BUILD"
printf '%d passed, %d failed\n' "$PASSED" "$FAILED"
if ((FAILED)); then
    printf 'failed: %s\n' "${FAILURES[@]}"
    exit 1
fi
