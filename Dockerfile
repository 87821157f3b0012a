# ipft-web in a container: Debian 12, BCC from the distribution, the project in a venv.
#
# Build:  podman build -t ipft-web .        (or docker build -t ipft-web .)
# Run (the tool traces the host's kernel and marks packets in the host's network namespace):
#   podman run --rm -it --privileged --network host --pid host \
#     -v /sys:/sys:ro -v /lib/modules:/lib/modules:ro -v /usr/src:/usr/src:ro ipft-web
# then open http://127.0.0.1:8080/ on the host (with --network host the container's loopback is the
# host's). Leave out `-v /usr/src:/usr/src:ro` on a host without kernel headers: the image carries
# Debian 12's header tree, which is enough because every struct field is read at a BTF offset.
# docs/install.md explains each flag; scripts/test-image.sh builds and checks this image.
FROM debian:bookworm-slim

ARG DEBIAN_FRONTEND=noninteractive

# System packages: the same script a host runs, apt part only (a layer that survives code changes).
COPY scripts/install.sh /tmp/ipft-install.sh
RUN bash /tmp/ipft-install.sh --packages-only --no-headers \
    && rm -f /tmp/ipft-install.sh /opt/ipft-web/apt-installed \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin

# A fallback kernel header tree for BCC (Debian 12's kernel), unpacked without the compiler and
# kbuild packages it depends on: BCC only reads the headers. (Only usr/src is copied out: extracting
# a .deb onto / would replace the merged-/usr symlink /lib with a directory.) Any host kernel works
# with it, since the BPF program takes every offset from the host's BTF.
RUN set -eu; \
    apt-get update -q; \
    arch="$(dpkg --print-architecture)"; \
    flavour="$(apt-cache depends "linux-headers-$arch" | awk '$1 == "Depends:" && $2 ~ /^linux-headers-/ {print $2; exit}')"; \
    common="$(apt-cache depends "$flavour" | awk '$1 == "Depends:" && $2 ~ /^linux-headers-.*-common$/ {print $2; exit}')"; \
    test -n "$flavour" && test -n "$common"; \
    mkdir /tmp/debs && cd /tmp/debs; \
    apt-get download "$flavour" "$common"; \
    for deb in ./*.deb; do dpkg-deb -x "$deb" tree; done; \
    cp -a tree/usr/src/. /usr/src/; \
    cd / && rm -rf /tmp/debs /var/lib/apt/lists/* /var/cache/apt/*.bin; \
    test -d "/usr/src/$common/include/linux" && test -d "/usr/src/$flavour/include/generated"

# The project (see .dockerignore for what is left out), into /opt/ipft-web/venv, again by the script.
# Behind a TLS-intercepting proxy, hand pip its CA bundle without baking it into the image:
#   podman build --secret id=pip-ca,src=/etc/ssl/certs/ca-certificates.crt -t ipft-web .
COPY . /tmp/ipft-src
RUN --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && PIP_NO_CACHE_DIR=1 bash /tmp/ipft-src/scripts/install.sh --no-run --skip-packages --no-headers \
        --venv /opt/ipft-web/venv \
    && rm -rf /tmp/ipft-src /root/.cache \
    && /opt/ipft-web/venv/bin/python -c "import bcc, ipft_web; bcc.BPF"

ENV PYTHONUNBUFFERED=1
EXPOSE 8080
ENTRYPOINT ["/opt/ipft-web/venv/bin/ipft-web"]
CMD ["--host", "127.0.0.1", "--port", "8080"]
