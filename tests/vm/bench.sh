# The guest half of the VM benchmark: an address (DHCP from passt, or set
# statically on a kernel tap), then iperf3 guest → host and host → guest
# (-R), each marked at start and end so that the harness can read passt's
# CPU time around it.
#
# Set by the harness before this: STATIC (empty: DHCP; else ADDR/PREFIX),
# SERVER (empty: the DHCP router), MTU (with STATIC), IPERF_PORT, SECS.

dev=$(nic) || fail "no NIC"
ip link set "$dev" up
if [ -z "$STATIC" ]; then
	dhcp4 "$dev"
	srv=${SERVER:-$router}
else
	ip link set "$dev" mtu "$MTU"
	ip addr add "$STATIC" dev "$dev"
	srv=$SERVER
fi
# The host side of a tap is configured once qemu created it.
wait_until 60 ping -c 1 -W 1 "$srv" || fail "no answer from $srv"
mark ready "mtu=$(cat "/sys/class/net/$dev/mtu")"
iperf out "$srv" "$IPERF_PORT" "$SECS"
iperf in "$srv" "$IPERF_PORT" "$SECS" -R
