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
#   KINDS="tput rr crr" selects the tests: iperf3 throughput (IPv4/IPv6, MTU
#   65520 and 1500), 1-byte request-response latency, connection rate (the
#   last two with the tcp_rr example: cargo build --release -p
#   passt-driver-epoll --example tcp_rr).
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
	rm -rf "/etc/netns/$host"
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
	case $1/$2 in
	slirp/*) echo 10.0.2.2 ;;
	*/6) echo fd77::1 ;;
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
# run_case TRANSLATOR KIND DIRECTION FAMILY MTU
#   KIND: tput (iperf3, Gbit/s), rr (1-byte request-response, µs per
#   transaction), crr (connect-request-response-close, connections per second)
run_case() {
	local t=$1 kind=$2 dir=$3 fam=$4 mtu=$5 g p out cpu0 cpu1 r val bytes target
	if [ "$t" = slirp ] && [ "$fam" = 6 ]; then return; fi
	new_guest
	g=$G
	start_translator "$t" "$g" "$mtu"
	p=$P
	out=$work/$t-$kind-$dir-$fam-$mtu.out
	cpu0=$(cpu_of "$p")
	if [ "$dir" = ns2host ]; then
		target=$(gateway_of "$t" "$fam")
		if [ "$kind" = tput ]; then
			in_host iperf3 -s -1 -p 5201 </dev/null >/dev/null 2>&1 &
		else
			in_host "$rr" server 5201 </dev/null >/dev/null 2>&1 &
		fi
		pids+=("$!")
		sleep 0.3
		client=(nsenter -t "$g" -U -n --preserve-credentials)
	else
		# The host's own address, not loopback: a loopback source lets
		# Debian's pasta splice the connection inside the namespace and skip
		# the tap, which is not what is measured here.
		if [ "$fam" = 6 ]; then target=fd77::2; else target=10.77.0.2; fi
		if [ "$kind" = tput ]; then
			in_guest "$g" iperf3 -s -1 -p 5301 </dev/null >/dev/null 2>&1 &
		else
			in_guest "$g" "$rr" server 5301 </dev/null >/dev/null 2>&1 &
		fi
		pids+=("$!")
		sleep 0.5
		client=(ip netns exec "$host")
	fi
	local port=5201
	[ "$dir" = host2ns ] && port=5301
	case $kind in
	tput)
		timeout $((secs + 20)) "${client[@]}" iperf3 -c "$target" -p "$port" -t "$secs" -J >"$out" 2>/dev/null || true
		read -r val bytes < <(parse_iperf "$out" 2>/dev/null || echo "0 0")
		;;
	rr | crr)
		timeout $((secs + 20)) "${client[@]}" "$rr" "$kind" "$target" "$port" "$secs" >"$out" 2>/dev/null || true
		read -r rate usec <"$out" || { rate=0; usec=0; }
		if [ "$kind" = rr ]; then val=${usec:-0}; else val=${rate:-0}; fi
		bytes=0
		;;
	esac
	cpu1=$(cpu_of "$p")
	kill_tree "$p" "$g"
	wait "$p" 2>/dev/null || true
	local cpu_gb
	cpu_gb=$(awk -v c0="$cpu0" -v c1="$cpu1" -v b="$bytes" 'BEGIN{ if (b>0) printf "%.2f", (c1-c0)/(b/1e9); else printf "%.2f", c1-c0 }')
	r="$kind $dir $fam $mtu $t $val $cpu_gb"
	echo "$r" >&2
	results+=("$r")
}

command -v iperf3 >/dev/null || { echo "iperf3 missing" >&2; exit 1; }
rr=${TCP_RR:-$top/target/release/examples/tcp_rr}
[ -x "$rr" ] || { echo "$rr missing: cargo build --release -p passt-driver-epoll --example tcp_rr" >&2; exit 1; }
cp "$rr" "$work/tcp_rr" && chmod 755 "$work/tcp_rr" && rr=$work/tcp_rr
translators=()
if [ ${#only[@]} -gt 0 ]; then translators=("${only[@]}"); else
	[ -x "$ours" ] && translators+=(ours)
	[ -x /usr/bin/pasta ] && translators+=(debian)
	command -v slirp4netns >/dev/null && translators+=(slirp)
fi
kinds=${KINDS:-tput rr crr}

setup_host
for kind in $kinds; do
	mtus="65520 1500"
	fams="4 6"
	[ "$kind" = tput ] || { mtus=65520; fams=4; }
	for mtu in $mtus; do
		for fam in $fams; do
			for dir in ns2host host2ns; do
				for t in "${translators[@]}"; do
					run_case "$t" "$kind" "$dir" "$fam" "$mtu"
				done
			done
		done
	done
done

# One row per case: every translator's value, and ours against the best of
# the others (throughput and connection rate: higher is better, ratio
# ours/best; latency: lower is better, ratio ours/best as well).
{
	echo "| test | direction | IP | MTU | ${translators[*]} | ours / best other | CPU s per GB (or s) ${translators[*]} |"
	echo "|---|---|---|---|---|---|---|"
	printf '%s\n' "${results[@]}" | awk '
	{ key=$1" "$2" "$3" "$4; if (!(key in seen)) { seen[key]=1; order[++n]=key }
	  val[key" "$5]=$6; cpu[key" "$5]=$7; ts[$5]=1 }
	END {
	  split("ours debian slirp", all, " ")
	  for (i=1;i<=n;i++) {
	    k=order[i]; split(k, f, " ")
	    unit = (f[1]=="tput") ? "Gbit/s" : (f[1]=="rr") ? "µs" : "conn/s"
	    vals=""; cpus=""; best=""
	    for (j=1;j<=3;j++) { t=all[j]; if (!(t in ts)) continue
	      v=((k" "t) in val) ? val[k" "t] : "-"; c=((k" "t) in cpu) ? cpu[k" "t] : "-"
	      vals=vals (vals==""?"":" / ") v; cpus=cpus (cpus==""?"":" / ") c
	      if (t!="ours" && v!="-" && v>0) {
	        if (best=="" || (f[1]=="rr" ? v<best : v>best)) best=v } }
	    o=((k" ours") in val) ? val[k" ours"] : ""
	    ratio = (o!="" && best!="" && best>0) ? sprintf("%.2f", o/best) : "-"
	    printf "| %s (%s) | %s | v%s | %s | %s | %s | %s |\n", f[1], unit, f[2], f[3], f[4], vals, ratio, cpus
	  }
	}'
} | tee "${report:-/dev/null}"
