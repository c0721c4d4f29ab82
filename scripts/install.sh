#!/usr/bin/env bash
# Installs everything Corral needs on a Debian machine, as root. Safe to run again.
#   system packages (apt-get): Python, bubblewrap, gVisor (runsc, from bookworm-backports where the
#   host's Debian has it), Redis, debootstrap, iproute2, nftables (with its Python binding) and
#   conntrack for sandbox egress, Node.js, and for microVMs QEMU, busybox (the guest's initramfs),
#   e2fsprogs, iptables, the kernel-image unpackers and what virtiofsd builds with (volumes); for templates from images skopeo (pulls),
#   umoci (unpacks layers), patchelf and tini (envd's own Python and init in images), and the
#   registry (docker-registry) the image tests push to (token auth); the code interpreter's R
#   (IRkernel) and Java (a JDK: JShell) kernels, for its tests on the host
#   .venv with Corral and its dev tools (pip), .venv-e2b-2.31 with the old e2b SDK for the
#   compatibility tests, and the npm e2b SDK under tests/e2e/node
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  python3 python3-venv python3-dev gcc libc6-dev ca-certificates procps
  bubblewrap runsc redis-server debootstrap iproute2 util-linux nftables python3-nftables conntrack
  libnss-myhostname
  qemu-system-x86 qemu-utils busybox-static e2fsprogs iptables lz4 zstd xz-utils
  libseccomp-dev libcap-ng-dev pkg-config
  skopeo umoci patchelf tini docker-registry
  r-base-core r-cran-irkernel default-jdk-headless
)
command -v node >/dev/null && command -v npm >/dev/null || APT_PACKAGES+=(nodejs npm)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# `*.localhost` names resolve to this machine (the HTTPS sandbox names of `corral up --tls`).
if ! grep -qE '^hosts:.*[[:space:]]myhostname' /etc/nsswitch.conf; then
  sed -i -E 's/^(hosts:[[:space:]]+files)/\1 myhostname/' /etc/nsswitch.conf
fi
# gVisor: the 2024 build in bookworm-backports saves sandboxes with open TCP connections
# (`--net-disconnect-ok`), which the 2022 one in bookworm refuses; the runtime uses whichever
# is installed. No backports for the host's release: the distribution's runsc stays.
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
if [ "$codename" = bookworm ]; then
  backports=/etc/apt/sources.list.d/corral-backports.sources
  if [ ! -f "$backports" ]; then
    mirror=$(sed -n 's/^URIs:[[:space:]]*\(\S*\/debian\)[[:space:]]*$/\1/p' \
      /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: %s\n' \
      "${mirror:-http://deb.debian.org/debian}" /usr/share/keyrings/debian-archive-keyring.gpg > "$backports"
    apt-get update -qq
  fi
  if ! dpkg-query -W -f='${Version}' runsc 2>/dev/null | grep -q bpo; then
    echo "==> apt-get install -t bookworm-backports runsc"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t bookworm-backports runsc \
      || echo "    (no backported runsc: keeping $(dpkg-query -W -f='${Version}' runsc))"
  fi
fi
# gVisor, current: runsc built from the Go module proxy at the version deploy/runsc pins
# (every module checked against deploy/runsc/go.sum) into /usr/local/bin, ahead of Debian's
# on PATH. It brings setuid (`sudo`), lazy restores, filesystem checkpoints and a size limit
# on the writable layer. It needs Go >= 1.26; without it, the Debian runsc above stays.
runsc_pin=$(sed -n 's/^require gvisor.dev\/gvisor \(v\S*\)$/\1/p' deploy/runsc/go.mod)
runsc_version="go-${runsc_pin##*-}"
if command -v go >/dev/null && go version | grep -qE 'go1\.(2[6-9]|[3-9][0-9])'; then
  if [ "$(/usr/local/bin/runsc --version 2>/dev/null | head -1)" != "runsc version $runsc_version" ]; then
    echo "==> go build gvisor.dev/gvisor/runsc@$runsc_pin (a few minutes)"
    (cd deploy/runsc && CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -trimpath \
      -ldflags "-X gvisor.dev/gvisor/runsc/version.version=$runsc_version" \
      -o /usr/local/bin/runsc.new gvisor.dev/gvisor/runsc) \
      && mv /usr/local/bin/runsc.new /usr/local/bin/runsc
  fi
else
  echo "    (no Go >= 1.26: keeping Debian's runsc $(dpkg-query -W -f='${Version}' runsc))"
fi
# MicroVM volumes: virtiofsd (virtio-fs's vhost-user back-end, which bookworm does not
# package) built from crates.io at a pinned version into /usr/local/bin, with the host's
# cargo or else Debian's cargo-web (a current Rust; bookworm's own cargo is too old for it).
virtiofsd_version=1.14.0
if [ "$(/usr/local/bin/virtiofsd --version 2>/dev/null)" != "virtiofsd $virtiofsd_version" ]; then
  if ! command -v cargo >/dev/null; then
    echo "==> apt-get install cargo-web rustc-web"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends cargo-web rustc-web
  fi
  echo "==> cargo install virtiofsd@$virtiofsd_version (a minute or two)"
  cargo install -q --locked --root /usr/local virtiofsd --version "$virtiofsd_version"
fi
# MicroVM guests use Debian's cloud kernel, fetched with `apt-get download` when first needed.
if ! apt-cache policy linux-image-cloud-amd64 2>/dev/null | grep -q "Candidate: [0-9]"; then
  apt-get update -qq
fi
# Corral starts its own Redis per stack; the distribution's service only takes the port.
if command -v systemctl >/dev/null && systemctl is-enabled redis-server >/dev/null 2>&1; then
  systemctl disable --now redis-server >/dev/null 2>&1 || true
fi

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  python3 -m venv .venv
fi
echo "==> pip install -e .[dev]"
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'
# The node agent drives nftables through Debian's binding of libnftables (PyPI has none).
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
ln -sfn /usr/lib/python3/dist-packages/nftables "$site/nftables"

if [ ! -x .venv-e2b-2.31/bin/python ]; then
  echo "==> creating .venv-e2b-2.31 (e2b==2.31.0, for compatibility tests)"
  python3 -m venv .venv-e2b-2.31
fi
.venv-e2b-2.31/bin/python -m pip install -q 'e2b==2.31.0'

echo "==> .venv-trpc: trpc-agent-py[cube] for examples/trpc_agent_cube"
[ -x .venv-trpc/bin/python ] || python3 -m venv .venv-trpc
# trpc-agent-py 1.2 imports sqlalchemy's asyncio extension, which needs greenlet.
.venv-trpc/bin/python -m pip install -q 'trpc-agent-py[cube]' greenlet

echo "==> npm install (tests/e2e/node: the npm e2b SDK)"
npm install --prefix tests/e2e/node --silent --no-audit --no-fund

echo "==> done: activate with 'source .venv/bin/activate', then 'corral up'"
