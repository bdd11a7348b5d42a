# The guest half of the checks of passt behind a VM: addresses (DHCP, SLAAC,
# DHCPv6), ping of the gateway, TCP both ways with checksums, iperf3 both
# ways, UDP datagrams both ways. The back-end (stream socket, later
# vhost-user) does not matter here.
#
# Set by the harness before this: GW6 (the host's IPv6 gateway, which passt
# maps to the host's loopback like the IPv4 gateway; the router the RAs
# name is passt's link-local address), BIG_BYTES SMALL_BYTES, TCP_IN4 TCP_IN6
# UDP_IN4 UDP_IN6 (ports passt forwards to the guest), TCP_OUT4 TCP_OUT6
# UDP_OUT4 UDP_OUT6 IPERF_PORT (host servers behind the gateway),
# IPERF_SECS, UDP_SIZES (datagram sizes, each the first bytes of the big
# file) and UDP_IN_BYTES (their sum).

now() { cut -d' ' -f1 /proc/uptime; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

dev=$(nic) || fail "no NIC"
ip link set "$dev" up
mark nic "dev=$dev mac=$(cat "/sys/class/net/$dev/address")"

dhcp4 "$dev"
mark dhcp4 "ip=$ip mask=$mask router=$router dns=$dns mtu=$mtu search=$search"
gw4=$router
mark link "mtu=$(cat "/sys/class/net/$dev/mtu")"
slaac "$dev" 30
mark slaac "addr=$slaac_addr gw6=$gw6"
dhcp6 "$dev"
mark dhcp6 "addr=$new_ip6_address dns=$new_dhcp6_name_servers search=$new_dhcp6_domain_search"

ping -4 -c 3 -w 20 "$gw4" >/tmp/ping4 2>&1 || { cat /tmp/ping4; fail "ping $gw4"; }
mark ping4 "replies=$(grep -c 'bytes from' /tmp/ping4)"
ping -6 -c 3 -w 20 "$GW6" >/tmp/ping6 2>&1 || { cat /tmp/ping6; fail "ping $GW6"; }
mark ping6 "replies=$(grep -c 'bytes from' /tmp/ping6)"
# The router of the RAs (link-local): the harness decides what to expect.
ping -6 -c 3 -w 5 -W 2 -I "$dev" "$gw6" >/tmp/ping6ll 2>&1 || cat /tmp/ping6ll
mark ping6_router "replies=$(grep -c 'bytes from' /tmp/ping6ll)"

# tcp_in FAMILY PORT FILE: receives one connection through passt's forwarded
# port into FILE (the harness connects once it sees @@listen_tcpFAMILY).
tcp_in() {
	socat -T 60 -u "TCP$1-LISTEN:$2,reuseaddr" "CREATE:$3" &
	_pid=$!
	wait_until 10 sh -c "netstat -ltn | grep -q ':$2 '" || fail "socat does not listen on TCP port $2"
	mark "listen_tcp$1" "$2"
	_t0=$(now)
	wait "$_pid" || fail "receiving on TCP port $2"
	mark "tcp_in$1" "bytes=$(stat -c %s "$3") sha=$(sha "$3") secs=$(since "$_t0")"
}

# tcp_out FAMILY ADDR PORT FILE: sends FILE to a host server behind the gateway.
tcp_out() {
	_t0=$(now)
	socat -T 60 -u "OPEN:$4" "TCP$1:$2:$3" || fail "sending to $2 port $3"
	mark "tcp_out$1" "bytes=$(stat -c %s "$4") secs=$(since "$_t0")"
}

tcp_in 4 "$TCP_IN4" /tmp/big
[ "$(stat -c %s /tmp/big)" = "$BIG_BYTES" ] || fail "TCP: $(stat -c %s /tmp/big) of $BIG_BYTES bytes"
tcp_out 4 "$gw4" "$TCP_OUT4" /tmp/big
tcp_in 6 "$TCP_IN6" /tmp/small
tcp_out 6 "[$GW6]" "$TCP_OUT6" /tmp/small

iperf out "$gw4" "$IPERF_PORT" "$IPERF_SECS"
iperf in "$gw4" "$IPERF_PORT" "$IPERF_SECS" -R

# UDP: the datagrams of UDP_SIZES to the host, then from it.
udp_out() {
	for _s in $UDP_SIZES; do
		head -c "$_s" /tmp/big >/tmp/dg
		socat -b 65536 -u OPEN:/tmp/dg "UDP$1-SENDTO:$2:$3" || fail "UDP to $2 port $3"
	done
	mark "udp_out$1" "count=$(echo $UDP_SIZES | wc -w)"
}
udp_out 4 "$gw4" "$UDP_OUT4"
udp_out 6 "[$GW6]" "$UDP_OUT6"

# Room for all datagrams at once: a receiver the slow guest schedules late
# must not lose any to a full socket buffer.
sysctl -q -w net.core.rmem_max=8388608
sysctl -q -w net.core.rmem_default=8388608
socat -b 65536 -u "UDP4-RECV:$UDP_IN4" CREATE:/tmp/udp4 &
_u4=$!
socat -b 65536 -u "UDP6-RECV:$UDP_IN6" CREATE:/tmp/udp6 &
_u6=$!
wait_until 10 sh -c "netstat -lun | grep -q ':$UDP_IN4 ' && netstat -lun | grep -q ':$UDP_IN6 '" ||
	fail "socat does not listen on UDP"
mark listen_udp "$UDP_IN4 $UDP_IN6"
wait_until 30 sh -c "[ \$(stat -c %s /tmp/udp4) -ge $UDP_IN_BYTES ] && [ \$(stat -c %s /tmp/udp6) -ge $UDP_IN_BYTES ]" || true
kill "$_u4" "$_u6" 2>/dev/null || true
mark udp_in4 "bytes=$(stat -c %s /tmp/udp4) sha=$(sha /tmp/udp4)"
mark udp_in6 "bytes=$(stat -c %s /tmp/udp6) sha=$(sha /tmp/udp6)"
