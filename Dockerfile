# One image for every Corral service; compose.yaml picks the command.
FROM debian:bookworm-slim
# apt's lists stay: the microVM guest kernel is fetched with `apt-get download` when first needed.
# runsc comes from bookworm-backports: it saves sandboxes with open TCP connections.
RUN echo 'deb http://deb.debian.org/debian bookworm-backports main' > /etc/apt/sources.list.d/backports.list \
 && apt-get update \
 && apt-get install -y --no-install-recommends \
      python3 python3-venv ca-certificates bubblewrap debootstrap iproute2 util-linux procps \
      nftables python3-nftables conntrack \
      qemu-system-x86 qemu-utils busybox-static e2fsprogs iptables lz4 zstd xz-utils \
 && apt-get install -y --no-install-recommends -t bookworm-backports runsc
WORKDIR /opt/corral/src
COPY pyproject.toml setup.py README.md ./
COPY libs libs
COPY services services
COPY templates templates
COPY proto proto
# Editable: template builds package this source tree into each template. The node agent drives
# nftables through Debian's libnftables binding (PyPI has none).
RUN python3 -m venv /opt/corral/venv && /opt/corral/venv/bin/pip install --no-cache-dir -e . \
 && ln -s /usr/lib/python3/dist-packages/nftables \
      "$(/opt/corral/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nftables"
ENV PATH=/opt/corral/venv/bin:$PATH
