#!/usr/bin/env bash
# Throughput, latency, connection rate and CPU cost of user-mode networking,
# side by side in one run: passt-rs pasta, Debian's pasta, slirp4netns, and
# the kernel routing the same path with no translator (the limit).
#
# The "host" is a network namespace of this script whose only uplink is an ifb
# sink, so nothing a translator forwards can leave the machine. Peers:
#   loop    iperf3 / tcp_rr on the host namespace itself: reached from the
#           guest through the gateway address (which the translators map to
#           the host's loopback), and reaching the guest through the host's
#           own address on the forwarded port. Kernel limit: a veth pair
#           between the guest namespace and the host namespace.
#   r2, r20 a "remote" namespace joined to the host namespace by a veth
#           (10.78.0.2/24 <-> 10.78.0.1/24, fd78::2/64 <-> fd78::1/64) whose
#           incoming TCP is held 2 or 20 ms by nfq_delay (an NFQUEUE program,
#           driver-epoll/examples/nfq_delay.rs: this kernel has no netem).
#           Kernel limit: the guest namespace routed by the host namespace
#           over a veth (10.79.0.0/24, fd79::/64) to the same remote.
#   lo      loopback to loopback: a client on the host's 127.0.0.1 / ::1
#           reaches the forwarded port (in), a client on the namespace's
#           loopback reaches the host's through -T (out). pasta splices both
#           off the tap; slirp4netns has no -T, so only "in" is measured
#           through its forward. Kernel limit: bare loopback in the host
#           namespace.
# Every translator runs as an unprivileged user (nobody) in the host namespace
# and joins the guest namespace, a user namespace owned by nobody.
#
# Usage: tests/bench/run.sh [-t SECONDS] [-r RUNS] [-o REPORT.md] [-x TRANSLATOR]...
#   TRANSLATOR: ours, debian, slirp, kernel (default: all that are present).
#   RUNS: runs of every case (default 1), interleaved (every translator once,
#   then again); the table gives each cell's median, and a second table
#   lists every run of ours and of the best other translator.
#   KINDS="tput rr crr" selects the tests (iperf3 throughput, 1-byte
#   request-response latency, connection rate); PEERS="loop r2 r20 lo",
#   MTUS="65520 1500", FAMS="4 6", DIRS="out in" narrow the matrix.
# Needs root, iperf3, socat, iptables, iproute2, util-linux, and
#   cargo build --release -p passt-driver-epoll --bins --examples
# (pasta, tcp_rr, nfq_delay); Debian's passt and slirp4netns packages for the
# comparison. Debian's pasta refuses to run as root: like the others it runs as
# nobody, in a private mount namespace where /dev/net/tun is usable by it.
set -euo pipefail

secs=5
runs=1
report=
only=()
while getopts "t:r:o:x:" o; do
	case $o in
	t) secs=$OPTARG ;;
	r) runs=$OPTARG ;;
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
remote=pbr$$
pids=()
nfq=

cleanup() {
	set +e
	[ -n "$nfq" ] && kill_tree "$nfq"
	kill_tree "${pids[@]}"
	ip netns del "$host" 2>/dev/null
	ip netns del "$remote" 2>/dev/null
	for n in $(ip netns list | awk '{print $1}' | grep "^pbk$$-"); do ip netns del "$n"; done
	rm -rf "/etc/netns/$host"
	rm -rf "$work"
}
trap cleanup EXIT

in_host() { ip netns exec "$host" "$@"; }
in_remote() { ip netns exec "$remote" "$@"; }

setup_host() {
	ip netns add "$host"
	tw_reuse ip netns exec "$host"
	ip -n "$host" link set lo up
	ip -n "$host" link add eth0 type ifb
	ip -n "$host" link set eth0 up mtu 65520
	ip -n "$host" addr add 10.77.0.2/24 dev eth0
	ip -n "$host" route add default via 10.77.0.1
	ip -n "$host" -6 addr add fd77::2/64 dev eth0 nodad
	ip -n "$host" -6 route add default via fd77::1 dev eth0
	in_host sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
	mkdir -p "/etc/netns/$host"
	echo "nameserver 10.77.0.1" >"/etc/netns/$host/resolv.conf"
}

# The remote peer: a namespace behind a veth of the host namespace, whose
# incoming TCP goes through NFQUEUE 0 (held by nfq_delay while it runs; let
# through when it does not).
setup_remote() {
	ip netns add "$remote"
	tw_reuse ip netns exec "$remote"
	ip -n "$remote" link set lo up
	ip link add "hr$$" netns "$host" type veth peer name eth0 netns "$remote"
	ip -n "$host" link set "hr$$" up
	ip -n "$host" addr add 10.78.0.2/24 dev "hr$$"
	ip -n "$host" -6 addr add fd78::2/64 dev "hr$$" nodad
	ip -n "$remote" link set eth0 up
	ip -n "$remote" addr add 10.78.0.1/24 dev eth0
	ip -n "$remote" -6 addr add fd78::1/64 dev eth0 nodad
	ip -n "$remote" route add 10.79.0.0/24 via 10.78.0.2
	ip -n "$remote" -6 route add fd79::/64 via fd78::2
	in_remote iptables -A INPUT -p tcp -j NFQUEUE --queue-num 0 --queue-bypass
	in_remote ip6tables -A INPUT -p tcp -j NFQUEUE --queue-num 0 --queue-bypass
}

# Holds the remote's incoming TCP for RTT_MS (0: no hold).
set_rtt() {
	[ -n "$nfq" ] && { kill_tree "$nfq"; nfq=; }
	[ "$1" -gt 0 ] || return 0
	in_remote "$nfq_delay" 0 $(($1 * 1000)) 7200 </dev/null >/dev/null 2>"$work/nfq.err" &
	nfq=$!
	sleep 0.3
}

# Lets connect() reuse ports in TIME_WAIT in a namespace of this script
# (command prefix that runs in it). The default (2) does so only for
# loopback addresses: a client making thousands of connections per second to
# any other address then spends most of each connect() searching the port
# range, which limits every translator and the kernel's own path alike
# (~3600 connections/s here) and hides what the translators cost.
tw_reuse() { "$@" sysctl -qw net.ipv4.tcp_tw_reuse=1; }

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
# nobody (so that the translators, running as nobody, may join it). Sets G.
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
	tw_reuse nsenter -t "$G" -n
	pids+=("$G")
}

in_guest() { local g=$1; shift; nsenter -t "$g" -U -n --preserve-credentials "$@"; }

# The kernel's own path: a namespace with a veth into the host namespace
# (10.79.0.2/24 <-> 10.79.0.1/24, fd79::2/64 <-> fd79::1/64), routed by it.
# Sets K (its name).
new_kernel_guest() {
	local mtu=$1
	K=pbk$$-$RANDOM
	ip netns add "$K"
	tw_reuse ip netns exec "$K"
	ip -n "$K" link set lo up
	ip link add "hk$$" netns "$host" type veth peer name eth0 netns "$K"
	ip -n "$host" link set "hk$$" up mtu "$mtu"
	ip -n "$host" addr add 10.79.0.1/24 dev "hk$$"
	ip -n "$host" -6 addr add fd79::1/64 dev "hk$$" nodad
	ip -n "$K" link set eth0 up mtu "$mtu"
	ip -n "$K" addr add 10.79.0.2/24 dev eth0
	ip -n "$K" -6 addr add fd79::2/64 dev eth0 nodad
	ip -n "$K" route add default via 10.79.0.1
	ip -n "$K" -6 route add default via fd79::1
}

# start_translator NAME GUEST_PID MTU: sets P to the translator's PID, and
# returns once the guest has a default route.
start_translator() {
	local name=$1 g=$2 mtu=$3
	case $name in
	ours)
		in_host runuser -u nobody -- "$ours" -f -q --config-net -m "$mtu" -t 5301 -u none -T "$outbound" -U none "$g" \
			</dev/null >/dev/null 2>"$work/$name.err" &
		;;
	debian)
		in_host unshare -m sh -c "
			{ [ -e $work/tun ] || mknod $work/tun c 10 200; } && chmod 666 $work/tun && mount --bind $work/tun /dev/net/tun &&
			exec runuser -u nobody -- /usr/bin/pasta -f -q --config-net -m $mtu -t 5301 -u none -T $outbound -U none $g" \
			</dev/null >/dev/null 2>"$work/$name.err" &
		;;
	slirp)
		rm -f "$work/slirp.sock"
		in_host runuser -u nobody -- slirp4netns --configure --mtu="$mtu" --api-socket "$work/slirp.sock" \
			--userns-path="/proc/$g/ns/user" "$g" tap0 \
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

# Where the guest connects to reach a peer (namespace -> peer).
peer_addr() {
	local t=$1 peer=$2 fam=$3
	case $peer/$t/$fam in
	lo/*/6) echo ::1 ;;
	lo/*) echo 127.0.0.1 ;;
	loop/slirp/*) echo 10.0.2.2 ;;
	loop/kernel/6) echo fd79::1 ;;
	loop/kernel/*) echo 10.79.0.1 ;;
	loop/*/6) echo fd77::1 ;;
	loop/*) echo 10.77.0.1 ;;
	*/6) echo fd78::1 ;;
	*) echo 10.78.0.1 ;;
	esac
}

# Where a peer connects to reach the guest (peer -> namespace). Loopback
# sources are avoided: Debian's pasta would splice those inside the
# namespace and skip the tap, which is not what is measured here.
guest_addr() {
	local t=$1 peer=$2 fam=$3
	case $peer/$t/$fam in
	lo/*/6) echo ::1 ;;
	lo/*) echo 127.0.0.1 ;;
	*/kernel/6) echo fd79::2 ;;
	*/kernel/*) echo 10.79.0.2 ;;
	loop/*/6) echo fd77::2 ;;
	loop/*) echo 10.77.0.2 ;;
	*/6) echo fd78::2 ;;
	*) echo 10.78.0.2 ;;
	esac
}

# iperf3 JSON -> "Gbit/s bytes retransmissions"
parse_iperf() {
	python3 -c '
import json,sys
d=json.load(open(sys.argv[1]))
e=d.get("end",{})
r=e.get("sum_received") or e.get("sum",{})
s=e.get("sum_sent",{})
print("%.3f %d %d" % (r.get("bits_per_second",0)/1e9, r.get("bytes",0), s.get("retransmits",0)))' "$1"
}

results=()
# run_case TRANSLATOR KIND PEER DIRECTION FAMILY MTU
#   KIND: tput (iperf3, Gbit/s), rr (1-byte request-response, µs per
#   transaction), crr (connect-request-response-close, connections per second)
#   PEER: loop, r2, r20; DIRECTION: out (namespace -> peer), in (peer ->
#   namespace).
run_case() {
	local t=$1 kind=$2 peer=$3 dir=$4 fam=$5 mtu=$6 g= p= out cpu0=0 cpu1=0 r val bytes retr=0 target
	local srv client
	if [ "$t" = slirp ] && [ "$fam" = 6 ]; then return; fi
	if [ "$t" = slirp ] && [ "$peer/$dir" = lo/out ]; then return; fi
	local peer_ns=(ip netns exec "$host")
	[ "$peer" = loop ] || [ "$peer" = lo ] || peer_ns=(ip netns exec "$remote")
	# Outbound forwards (-T): the host's loopback port of the "out" case.
	outbound=none
	[ "$peer" = lo ] && outbound=5201
	if [ "$t" = kernel ] && [ "$peer" = lo ]; then
		# Bare loopback: both ends in the host namespace.
		local guest_ns=(ip netns exec "$host")
	elif [ "$t" = kernel ]; then
		new_kernel_guest "$mtu"
		local guest_ns=(ip netns exec "$K")
	else
		new_guest
		g=$G
		start_translator "$t" "$g" "$mtu"
		p=$P
		local guest_ns=(nsenter -t "$g" -U -n --preserve-credentials)
	fi
	out=$work/$t-$kind-$peer-$dir-$fam-$mtu.out
	[ -n "$p" ] && cpu0=$(cpu_of "$p")
	if [ "$dir" = out ]; then
		target=$(peer_addr "$t" "$peer" "$fam")
		srv=("${peer_ns[@]}")
		client=("${guest_ns[@]}")
		port=5201
	else
		target=$(guest_addr "$t" "$peer" "$fam")
		srv=("${guest_ns[@]}")
		client=("${peer_ns[@]}")
		port=5301
		[ "$t" = kernel ] && port=5201
	fi
	local sport=5201
	[ "$dir" = in ] && sport=5301
	[ "$t" = kernel ] && sport=5201
	if [ "$kind" = tput ]; then
		timeout $((secs + 30)) "${srv[@]}" iperf3 -s -1 -p "$sport" </dev/null >/dev/null 2>&1 &
	else
		timeout $((secs + 30)) "${srv[@]}" "$rr" server "$sport" </dev/null >/dev/null 2>&1 &
	fi
	pids+=("$!")
	local srvpid=$!
	sleep 0.5
	case $kind in
	tput)
		timeout $((secs + 20)) "${client[@]}" iperf3 -c "$target" -p "$port" -t "$secs" -J >"$out" 2>/dev/null || true
		read -r val bytes retr < <(parse_iperf "$out" 2>/dev/null || echo "0 0 0")
		;;
	rr | crr)
		timeout $((secs + 20)) "${client[@]}" "$rr" "$kind" "$target" "$port" "$secs" >"$out" 2>/dev/null || true
		read -r rate usec <"$out" || { rate=0; usec=0; }
		if [ "$kind" = rr ]; then val=${usec:-0}; else val=${rate:-0}; fi
		bytes=0
		;;
	esac
	[ -n "$p" ] && cpu1=$(cpu_of "$p")
	kill_tree "$srvpid"
	if [ "$t" = kernel ] && [ "$peer" = lo ]; then
		:
	elif [ "$t" = kernel ]; then
		ip netns del "$K"
		ip -n "$host" link del "hk$$" 2>/dev/null || true
	else
		kill_tree "$p" "$g"
		wait "$p" 2>/dev/null || true
	fi
	local cpu_gb
	if [ "$t" = kernel ]; then cpu_gb=-; else
		cpu_gb=$(awk -v c0="$cpu0" -v c1="$cpu1" -v b="$bytes" 'BEGIN{ if (b>0) printf "%.2f", (c1-c0)/(b/1e9); else printf "%.2f", c1-c0 }')
	fi
	r="$kind $peer $dir $fam $mtu $t $val $cpu_gb $retr"
	echo "$r" >&2
	results+=("$r")
}

command -v iperf3 >/dev/null || { echo "iperf3 missing" >&2; exit 1; }
rr=${TCP_RR:-$top/target/release/examples/tcp_rr}
nfq_delay=${NFQ_DELAY:-$top/target/release/examples/nfq_delay}
for b in "$rr" "$nfq_delay"; do
	[ -x "$b" ] || { echo "$b missing: cargo build --release -p passt-driver-epoll --bins --examples" >&2; exit 1; }
done
cp "$rr" "$work/tcp_rr" && chmod 755 "$work/tcp_rr" && rr=$work/tcp_rr
cp "$ours" "$work/pasta" && chmod 755 "$work/pasta" && ours=$work/pasta
translators=()
if [ ${#only[@]} -gt 0 ]; then translators=("${only[@]}"); else
	[ -x "$ours" ] && translators+=(ours)
	[ -x /usr/bin/pasta ] && translators+=(debian)
	command -v slirp4netns >/dev/null && translators+=(slirp)
	translators+=(kernel)
fi
kinds=${KINDS:-tput rr crr}
peers=${PEERS:-loop r2 r20}

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
setup_host
setup_remote
for peer in $peers; do
	case $peer in r2) set_rtt 2 ;; r20) set_rtt 20 ;; *) set_rtt 0 ;; esac
	for kind in $kinds; do
		mtus=${MTUS:-65520 1500}
		fams=${FAMS:-4 6}
		[ "$kind" = tput ] || mtus=65520
		[ "$kind" = tput ] || [ "$peer" = loop ] || [ "$peer" = lo ] || continue
		for mtu in $mtus; do
			for fam in $fams; do
				for dir in ${DIRS:-out in}; do
					for _ in $(seq "$runs"); do
						for t in "${translators[@]}"; do
							run_case "$t" "$kind" "$peer" "$dir" "$fam" "$mtu"
						done
					done
				done
			done
		done
	done
done
set_rtt 0
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# One row per case: every translator's value, ours against the best of the
# other translators (throughput and connection rate: higher is better;
# latency: lower is better; the ratio is ours/best in both cases), ours
# against the kernel's path, CPU and the senders' retransmissions.
{
	echo "load average after the run: $load_after"
	echo
	echo "| test | peer | dir | IP | MTU | ${translators[*]} | ours / best other | ours / kernel | CPU s/GB (rr, crr: s) | retransmissions |"
	echo "|---|---|---|---|---|---|---|---|---|---|"
	printf '%s\n' "${results[@]}" | awk -v list="${translators[*]}" -v runs="$runs" '
	function median(s,   a, m, i, j, x) {
	  m=split(s, a, " ")
	  for (i=2;i<=m;i++) { x=a[i]; for (j=i-1;j>0 && a[j]+0>x+0;j--) a[j+1]=a[j]; a[j+1]=x }
	  return (m%2) ? a[(m+1)/2] : sprintf("%.6g", (a[m/2]+a[m/2+1])/2)
	}
	function add(arr, k, v) { if (k in arr) arr[k] = arr[k] " " v; else arr[k] = v }
	{ key=$1" "$2" "$3" "$4" "$5; if (!(key in seen)) { seen[key]=1; order[++n]=key }
	  add(val, key" "$6, $7); add(cpu, key" "$6, $8); add(re, key" "$6, $9) }
	END {
	  nt=split(list, all, " ")
	  for (i=1;i<=n;i++) {
	    k=order[i]; split(k, f, " ")
	    unit = (f[1]=="tput") ? "Gbit/s" : (f[1]=="rr") ? "µs" : "conn/s"
	    vals=""; cpus=""; res=""; best=""; bestt=""
	    for (j=1;j<=nt;j++) { t=all[j]
	      v=((k" "t) in val) ? median(val[k" "t]) : "-"
	      vals=vals (vals==""?"":" / ") v
	      if (t!="kernel") {
	        c=((k" "t) in cpu && cpu[k" "t]!~/-/) ? median(cpu[k" "t]) : "-"; cpus=cpus (cpus==""?"":" / ") c
	        x=((k" "t) in re && re[k" "t]!~/-/) ? median(re[k" "t]) : "-"; res=res (res==""?"":" / ") x
	      }
	      if (t!="ours" && t!="kernel" && v!="-" && v>0) {
	        if (best=="" || (f[1]=="rr" ? v<best : v>best)) { best=v; bestt=t } } }
	    o=((k" ours") in val) ? median(val[k" ours"]) : ""
	    kv=((k" kernel") in val) ? median(val[k" kernel"]) : ""
	    ratio = (o!="" && best!="" && best>0) ? sprintf("%.2f", o/best) : "-"
	    kr = (o!="" && kv!="" && kv>0) ? sprintf("%.2f", o/kv) : "-"
	    printf "| %s (%s) | %s | %s | v%s | %s | %s | %s | %s | %s | %s |\n", f[1], unit, f[2], f[3], f[4], f[5], vals, ratio, kr, cpus, res
	    if (runs > 1) {
	      spread[i]=sprintf("| %s | %s | %s | v%s | %s | %s | %s | %s |", f[1], f[2], f[3], f[4], f[5],
	        ((k" ours") in val) ? val[k" ours"] : "-", bestt=="" ? "-" : bestt,
	        bestt=="" ? "-" : val[k" "bestt])
	    }
	  }
	  if (runs > 1) {
	    printf "\nEvery run (the table above gives medians):\n\n"
	    print "| test | peer | dir | IP | MTU | ours | best other | its runs |"
	    print "|---|---|---|---|---|---|---|---|"
	    for (i=1;i<=n;i++) print spread[i]
	  }
	}'
} | tee "${report:-/dev/null}"
