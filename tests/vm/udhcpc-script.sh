#!/bin/sh
# udhcpc's script in the test VM: applies a lease and records it in
# /tmp/lease4 as shell assignments.
case "$1" in
deconfig)
	ip -4 addr flush dev "$interface"
	ip link set "$interface" up
	;;
bound | renew)
	ip -4 addr flush dev "$interface"
	ip addr add "$ip/${mask:-24}" dev "$interface"
	[ -z "$mtu" ] || ip link set "$interface" mtu "$mtu"
	for r in $router; do
		ip route replace default via "$r" dev "$interface"
		break
	done
	{
		echo "ip='$ip'"
		echo "mask='$mask'"
		echo "router='$router'"
		echo "dns='$dns'"
		echo "domain='$domain'"
		echo "search='$search'"
		echo "mtu='$mtu'"
	} >/tmp/lease4.tmp
	mv /tmp/lease4.tmp /tmp/lease4
	;;
esac
exit 0
