# The guest half of the reboot and reconnect checks: one round per boot.
# Each round takes a DHCP lease, pings the gateway, sends DATA_BYTES of
# random data to a host server behind the gateway and receives as many
# through a forwarded port, each with its SHA-256 marked; then asks the
# harness what to do next: "reboot" (a reset, which reboots the machine:
# the harness runs qemu without -no-reboot) or "exit" (power off).
#
# Set by the harness before this: DATA_BYTES, TCP_IN4 (port passt forwards
# to the guest), TCP_OUT4 (host server), CTL_PORT (host server answering
# the next action).

dev=$(nic) || fail "no NIC"
ip link set "$dev" up
dhcp4 "$dev"
gw4=$router
mark round "ip=$ip boot=$(cut -d' ' -f1 /proc/uptime)"
ping -4 -c 3 -w 20 "$gw4" >/tmp/ping4 2>&1 || { cat /tmp/ping4; fail "ping $gw4"; }
mark round_ping "replies=$(grep -c 'bytes from' /tmp/ping4)"

head -c "$DATA_BYTES" /dev/urandom >/tmp/out
socat -T 60 -u OPEN:/tmp/out "TCP4:$gw4:$TCP_OUT4" || fail "sending to $gw4 port $TCP_OUT4"
mark round_out "bytes=$(stat -c %s /tmp/out) sha=$(sha /tmp/out)"

socat -T 60 -u "TCP4-LISTEN:$TCP_IN4,reuseaddr" CREATE:/tmp/in &
_pid=$!
wait_until 10 sh -c "netstat -ltn | grep -q ':$TCP_IN4 '" || fail "socat does not listen on $TCP_IN4"
mark round_listen "$TCP_IN4"
wait "$_pid" || fail "receiving on TCP port $TCP_IN4"
mark round_in "bytes=$(stat -c %s /tmp/in) sha=$(sha /tmp/in)"

next=$(socat -T 20 -u "TCP4:$gw4:$CTL_PORT" - 2>/dev/null) || fail "asking for the next step"
mark round_next "$next"
case "$next" in
reboot) reboot -f ;;
*) poweroff -f ;;
esac
sleep 60
fail "still running after $next"
