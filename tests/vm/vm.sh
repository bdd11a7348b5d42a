# Helpers for the test scripts the VM runs (sourced by /init before /test.sh,
# in a `set -e` subshell). The harness reads the "@@" lines on the console.

# mark KEY [VALUE...]: tells the harness something ("@@KEY VALUE...").
mark() { echo "@@$*"; }

# fail WHAT: reports a failure and ends the test script.
fail() {
	echo "@@fail $*"
	exit 1
}

# wait_until SECS CMD [ARG...]: runs CMD every 0.2 s until it succeeds, at
# most SECS seconds; fails if it never does.
wait_until() {
	_n=$(($1 * 5))
	shift
	until "$@" >/dev/null 2>&1; do
		_n=$((_n - 1))
		[ "$_n" -gt 0 ] || return 1
		sleep 0.2
	done
}

# The (only) NIC: the first interface that is not loopback.
nic() {
	for _d in /sys/class/net/*; do
		[ "${_d##*/}" = lo ] || { echo "${_d##*/}"; return 0; }
	done
	return 1
}

# dhcp4 IF: a DHCP lease with busybox udhcpc, applied (address, route, MTU);
# sets ip, mask, router, dns, domain, mtu from it.
dhcp4() {
	rm -f /tmp/lease4
	udhcpc -i "$1" -f -q -n -t 5 -T 2 -O mtu -O search -s /bin/udhcpc-script >/tmp/udhcpc.log 2>&1 ||
		{ cat /tmp/udhcpc.log; fail "udhcpc got no lease"; }
	. /tmp/lease4
}

# slaac IF SECS: waits for an address from router advertisements and the
# default route they bring; sets slaac_addr and gw6.
slaac() {
	wait_until "$2" sh -c "ip -6 -o addr show dev $1 scope global | grep -q inet6" ||
		{ ip -6 addr; fail "no SLAAC address on $1"; }
	slaac_addr=$(ip -6 -o addr show dev "$1" scope global | awk '{ print $4; exit }')
	wait_until "$2" sh -c "ip -6 route show default | grep -q via" ||
		{ ip -6 route; fail "no IPv6 default route"; }
	gw6=$(ip -6 route show default | awk '{ for (i = 1; i < NF; i++) if ($i == "via") { print $(i + 1); exit } }')
}

# dhcp6 IF: an address from DHCPv6 (ISC dhclient), applied; sets
# new_ip6_address, new_dhcp6_name_servers, new_dhcp6_domain_search.
dhcp6() {
	# dhclient needs a link-local address that is no longer tentative.
	wait_until 10 sh -c "ip -6 -o addr show dev $1 scope link | grep -v tentative | grep -q inet6" ||
		fail "link-local address of $1 stays tentative"
	rm -f /tmp/lease6
	timeout 30 dhclient -6 -1 -v -sf /bin/dhclient-script -lf /var/lib/dhcp/dhclient6.leases \
		-pf /run/dhclient6.pid "$1" >/tmp/dhclient.log 2>&1 ||
		{ cat /tmp/dhclient.log; fail "dhclient -6 got no lease"; }
	[ -e /tmp/lease6 ] || { cat /tmp/dhclient.log; fail "dhclient -6: no BOUND6"; }
	. /tmp/lease6
	[ ! -e /run/dhclient6.pid ] || kill "$(cat /run/dhclient6.pid)" 2>/dev/null || true
}

# iperf NAME SERVER PORT SECS [ARG...]: one iperf3 run, marked at its start
# (@@iperf_NAME_begin) and end (@@iperf_NAME_sender and @@iperf_NAME with
# iperf3's sender and receiver lines).
iperf() {
	_name=$1 _srv=$2 _port=$3 _secs=$4
	shift 4
	mark "iperf_${_name}_begin"
	iperf3 -c "$_srv" -p "$_port" -t "$_secs" -f m "$@" >/tmp/iperf.log 2>&1 ||
		{ cat /tmp/iperf.log; fail "iperf3 $_name"; }
	mark "iperf_${_name}_sender" "$(grep sender /tmp/iperf.log | tail -n1)"
	mark "iperf_$_name" "$(grep receiver /tmp/iperf.log | tail -n1)"
}

# sha FILE: its SHA-256.
sha() { sha256sum "$1" | cut -d' ' -f1; }
