#!/bin/busybox sh
# PID 1 of the initramfs: loads the virtio drivers, puts the sandbox's network on eth0,
# mounts the template's disk as the root (and the sandbox's volumes in it) and hands over
# to the template's init (the `corral.init=` argument, comma-separated). `corral.probe`
# only says the guest booted.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for module in $(cat /etc/modules.order); do insmod "/lib/modules/$module"; done

arg() { tr ' ' '\n' < /proc/cmdline | sed -n "s/^$1=//p"; }

if grep -q corral.probe /proc/cmdline; then
  echo CORRAL-PROBE-OK
  poweroff -f
fi

GUEST_IP=$(arg corral.ip)
GATEWAY=$(arg corral.gw)
INIT=$(arg corral.init)
VOLUMES=$(arg corral.volumes)

ip link set lo up
ip addr add "$GUEST_IP" dev eth0
ip link set eth0 up
ip route add default via "$GATEWAY"

while [ ! -b /dev/vda ]; do sleep 0.01; done
mkdir -p /newroot
# noinit_itable: no background zeroing of inode tables, which every clone would redo.
mount -t ext4 -o noatime,noinit_itable /dev/vda /newroot || { echo "cannot mount the root disk"; poweroff -f; }
for dir in dev proc sys tmp run; do mkdir -p "/newroot/$dir"; done
mount --move /dev /newroot/dev
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts -o nosuid,noexec,gid=5,mode=620,ptmxmode=666 devpts /newroot/dev/pts
mount -t tmpfs -o nosuid,nodev shm /newroot/dev/shm
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /newroot/tmp
mount -t tmpfs -o nosuid,nodev,mode=755 tmpfs /newroot/run
# Volumes: virtio-fs devices, each mounted where the sandbox asked (`corral.volumes=`: base64
# of "tag path" lines).
echo "$VOLUMES" | base64 -d | while read -r tag path; do
  mkdir -p "/newroot$path" && mount -t virtiofs "$tag" "/newroot$path" \
    || { echo "cannot mount the volume at $path"; poweroff -f; }
done
hostname sandbox
# Pages the guest kernel moves on its own (proactive compaction, huge-page collapsing) become
# private copies in every clone of a snapshot: the guest leaves its memory where it is.
echo 0 > /newroot/proc/sys/vm/compaction_proactiveness
echo never > /newroot/sys/kernel/mm/transparent_hugepage/enabled

IFS=, ; set -- $INIT; unset IFS
exec env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
  PYTHONDONTWRITEBYTECODE=1 CORRAL_SYNC_CLOCK=1 switch_root /newroot "$@"
