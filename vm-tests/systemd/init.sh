#!/bin/busybox sh
# The systemd guest's first stage, packed into the initramfs as /init: load
# the modules that reach the disk (virtio_blk, ext4) and the checks' share
# (9p), mount the guest's own ext4 root read-write and hand it to systemd as
# PID 1. Nothing of the host's root is used.
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /newroot
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(ls /modules | sort); do insmod /modules/$m || echo "airlock-vm: insmod $m failed"; done
if ! mount -t ext4 -o rw /dev/vda /newroot; then
    echo "airlock-vm: cannot mount the guest's root (/dev/vda)"; echo "AIRLOCK-VM-EXIT=97"; poweroff -f
fi
umount /proc /sys /dev
exec switch_root /newroot /sbin/init
