#!/usr/bin/env bash
# Throughput and CPU cost of user-mode networking, side by side in one run:
# passt-rs pasta, Debian's pasta and slirp4netns, each moving iperf3 traffic
# between a namespace and the "host".
#
# The "host" is a network namespace of this script whose only uplink is an ifb
# sink, so nothing a translator forwards can leave the machine. Host-side servers
# listen on that namespace's loopback (reached from the guest through the
# gateway address) or on its own address.
#
# Usage: tests/bench/run.sh [-t SECONDS] [-o REPORT.md] [-x TRANSLATOR]...
#   TRANSLATOR: ours, debian, slirp (default: all that are installed).
# Needs root, iperf3, socat, iproute2, util-linux; Debian's passt and slirp4netns
# packages for the comparison. Debian's pasta refuses to run as root: it runs as
# nobody here, in a private mount namespace where /dev/net/tun is usable by it.
set -euo pipefail

secs=5
report=
only=()
while getopts "t:o:x:" o; do
	case $o in
	t) secs=$OPTARG ;;
	o) report=$OPTARG ;;
	x) only+=("$OPTARG") ;;
	*) exit 1 ;;
	esac
done

top=$(cd "$(dirname "$0")/../.." && pwd)
ours=${PASTA_RS:-$top/target/release/pasta}
work=$(mktemp -d /tmp/passt-bench.XXXXXX)
chmod 1777 "$work"
host=pbh$$
pids=()

cleanup() {
	set +e
	kill_tree "${pids[@]}"
	ip netns del "$host" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

in_host() { ip netns exec "$host" "$@"; }

setup_host() {
	ip netns add "$host"
	ip -n "$host" link set lo up
	ip -n "$host" link add eth0 type ifb
	ip -n "$host" link set eth0 up mtu 65520
	ip -n "$host" addr add 10.77.0.2/24 dev eth0
	ip -n "$host" route add default via 10.77.0.1
	ip -n "$host" -6 addr add fd77::2/64 dev eth0 nodad
	ip -n "$host" -6 route add default via fd77::1 dev eth0
	mkdir -p "/etc/netns/$host"
	echo "nameserver 10.77.0.1" >"/etc/netns/$host/resolv.conf"
}

# A process and all its descendants, by PID.
tree() {
	local p c
	for p in "$@"; do
		echo "$p"
		for c in $(pgrep -P "$p" 2>/dev/null); do tree "$c"; done
	done
}

# CPU time (s) used so far by a process tree (wrappers included: they use none).
cpu_of() {
	local ticks=0 p t
	for p in $(tree "$1"); do
		t=$(awk '{print $14+$15+$16+$17}' "/proc/$p/stat" 2>/dev/null || echo 0)
		ticks=$((ticks + t))
	done
	awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.3f", t/hz}'
}

kill_tree() {
	local all
	all=$(tree "$@")
	# shellcheck disable=SC2086
	kill $all 2>/dev/null || true
	sleep 0.2
	# shellcheck disable=SC2086
	kill -9 $all 2>/dev/null || true
}

# A guest namespace: a sleeping holder process, in a user namespace owned by
# nobody (so that Debian's pasta, running as nobody, may join it). Sets G.
new_guest() {
	rm -f "$work/guest.pid"
	in_host runuser -u nobody -- unshare -rn sh -c "echo \$\$ > $work/guest.pid; exec sleep 3600" \
		</dev/null >/dev/null 2>&1 &
	pids+=("$!")
	for _ in $(seq 100); do
		[ -s "$work/guest.pid" ] && break
		sleep 0.05
	done
	G=$(cat "$work/guest.pid")
	pids+=("$G")
}

in_guest() { local g=$1; shift; nsenter -t "$g" -U -n --preserve-credentials "$@"; }

# start_translator NAME GUEST_PID MTU: sets P to the translator's PID, and
# returns once the guest has a default route.
start_translator() {
	local name=$1 g=$2 mtu=$3
	case $name in
	ours)
		in_host "$ours" -f -q --config-net -m "$mtu" -t 5301 -u none -T none -U none "$g" \
			</dev/null >/dev/null 2>"$work/$name.err" &
		;;
	debian)
		in_host unshare -m sh -c "
			{ [ -e $work/tun ] || mknod $work/tun c 10 200; } && chmod 666 $work/tun && mount --bind $work/tun /dev/net/tun &&
			exec runuser -u nobody -- /usr/bin/pasta -f -q --config-net -m $mtu -t 5301 -u none -T none -U none $g" \
			</dev/null >/dev/null 2>"$work/$name.err" &
		;;
	slirp)
		rm -f "$work/slirp.sock"
		in_host slirp4netns --configure --mtu="$mtu" --api-socket "$work/slirp.sock" "$g" tap0 \
			</dev/null >/dev/null 2>"$work/$name.err" &
		;;
	esac
	P=$!
	pids+=("$P")
	for _ in $(seq 100); do
		in_guest "$g" ip -4 route show default 2>/dev/null | grep -q . && break
		sleep 0.1
	done
	if [ "$name" = slirp ]; then
		for _ in $(seq 50); do [ -S "$work/slirp.sock" ] && break; sleep 0.1; done
		echo '{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"0.0.0.0","host_port":5301,"guest_port":5301}}' |
			in_host socat - "UNIX-CONNECT:$work/slirp.sock" >/dev/null
	fi
}

gateway_of() {
	case $1 in
	slirp) echo 10.0.2.2 ;;
	*) echo 10.77.0.1 ;;
	esac
}

# iperf3 JSON -> "Gbit/s bytes"
parse_iperf() {
	python3 -c '
import json,sys
d=json.load(open(sys.argv[1]))
e=d.get("end",{})
r=e.get("sum_received") or e.get("sum",{})
print("%.3f %d" % (r.get("bits_per_second",0)/1e9, r.get("bytes",0)))' "$1"
}

results=()
run_case() { # translator direction mtu
	local t=$1 dir=$2 mtu=$3 g p out cpu0 cpu1 r
	new_guest
	g=$G
	start_translator "$t" "$g" "$mtu"
	p=$P
	out=$work/$t-$dir-$mtu.json
	cpu0=$(cpu_of "$p")
	if [ "$dir" = ns2host ]; then
		in_host iperf3 -s -1 -B 127.0.0.1 -p 5201 </dev/null >/dev/null 2>&1 &
		pids+=("$!")
		sleep 0.3
		timeout $((secs + 20)) nsenter -t "$g" -U -n --preserve-credentials \
			iperf3 -c "$(gateway_of "$t")" -p 5201 -t "$secs" -J >"$out" 2>/dev/null || true
	else
		in_guest "$g" iperf3 -s -1 -p 5301 </dev/null >/dev/null 2>&1 &
		pids+=("$!")
		sleep 0.5
		timeout $((secs + 20)) ip netns exec "$host" iperf3 -c 10.77.0.2 -p 5301 -t "$secs" -J >"$out" 2>/dev/null || true
	fi
	cpu1=$(cpu_of "$p")
	kill_tree "$p" "$g"
	wait "$p" 2>/dev/null || true
	read -r gbps bytes < <(parse_iperf "$out" 2>/dev/null || echo "0 0")
	local cpu_gb
	cpu_gb=$(awk -v c0="$cpu0" -v c1="$cpu1" -v b="$bytes" 'BEGIN{ if (b>0) printf "%.2f", (c1-c0)/(b/1e9); else print "-" }')
	r="$t $dir $mtu $gbps $cpu_gb"
	echo "$r" >&2
	results+=("$r")
}

command -v iperf3 >/dev/null || { echo "iperf3 missing" >&2; exit 1; }
translators=()
if [ ${#only[@]} -gt 0 ]; then translators=("${only[@]}"); else
	[ -x "$ours" ] && translators+=(ours)
	[ -x /usr/bin/pasta ] && translators+=(debian)
	command -v slirp4netns >/dev/null && translators+=(slirp)
fi

setup_host
for mtu in 65520 1500; do
	for dir in ns2host host2ns; do
		for t in "${translators[@]}"; do
			run_case "$t" "$dir" "$mtu"
		done
	done
done

{
	echo "| direction | MTU | translator | Gbit/s | CPU s per GB |"
	echo "|---|---|---|---|---|"
	for r in "${results[@]}"; do
		read -r t dir mtu gbps cpu <<<"$r"
		echo "| $dir | $mtu | $t | $gbps | $cpu |"
	done
} | tee "${report:-/dev/null}"
