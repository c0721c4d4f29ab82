# One image for every Corral service; compose.yaml picks the command.
FROM debian:bookworm-slim
# apt's lists stay: the microVM guest kernel is fetched with `apt-get download` when first needed.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      python3 python3-venv ca-certificates runsc bubblewrap debootstrap iproute2 util-linux procps \
      qemu-system-x86 qemu-utils busybox-static e2fsprogs iptables lz4 zstd xz-utils
WORKDIR /opt/corral/src
COPY pyproject.toml README.md ./
COPY libs libs
COPY services services
COPY templates templates
COPY proto proto
# Editable: template builds package this source tree into each template.
RUN python3 -m venv /opt/corral/venv && /opt/corral/venv/bin/pip install --no-cache-dir -e .
ENV PATH=/opt/corral/venv/bin:$PATH
