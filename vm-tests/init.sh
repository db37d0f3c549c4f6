#!/bin/busybox sh
# The guest's first stage, packed into the initramfs as /init: load the
# modules that reach the host, mount the host's root read-only over 9p, put
# fresh tmpfs where the tests write, and chroot into it to run guest.sh.
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /host
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(ls /modules | sort); do insmod /modules/$m || echo "airlock-vm: insmod $m failed"; done
# cache=loose: the guest's page cache keeps what it read (the daemon, the CLI,
# bash, python: every test starts them again and again, and under TCG each
# read over 9p is slow). Nothing on the host may change under a running guest
# anyway (a rebuild crashes it); without that option if the kernel refuses it.
if ! mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose hostroot /host &&
    ! mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 hostroot /host; then
    echo "airlock-vm: cannot mount the host over 9p"; echo "AIRLOCK-VM-EXIT=97"; poweroff -f
fi
mount --rbind /proc /host/proc
mount --rbind /sys /host/sys
mount --rbind /dev /host/dev
mkdir -p /dev/shm
for d in /run /var/tmp /dev/shm; do mount -t tmpfs tmpfs /host$d; done
guest=$(sed -n 's/.*airlock_guest=\([^ ]*\).*/\1/p' /proc/cmdline)
plan=$(sed -n 's/.*airlock_plan=\([^ ]*\).*/\1/p' /proc/cmdline)
chroot /host /bin/bash "$guest" "$plan"
echo "AIRLOCK-VM-EXIT=$?"
sync
poweroff -f
