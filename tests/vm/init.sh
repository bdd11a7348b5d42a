#!/bin/sh
# /init of the test VM: mounts the pseudo file systems, loads the NIC's
# modules, runs /test.sh (appended to the initramfs by the harness) with the
# helpers of /lib/vm.sh, reports its exit status and powers off.
#
# Everything the harness reads is a console line starting with "@@": "@@boot"
# when user space starts, what the test marks, "@@exit N" at the end.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs -o size=90% tmp /tmp
for m in $(cat /etc/modules); do
	insmod "/lib/modules/$m.ko" || echo "@@warn insmod $m failed"
done
ip link set lo up
echo "@@boot $(cut -d' ' -f1 /proc/uptime)"
if [ -e /test.sh ]; then
	(
		set -e
		. /lib/vm.sh
		. /test.sh
	) </dev/null
	echo "@@exit $?"
fi
# With -no-reboot, qemu exits when the guest resets: no ACPI needed.
reboot -f
