#!/usr/bin/env bash
# Installs what the tests need, then runs every check: formatting, lints and the
# whole test suite (unit, property, snapshot, replay and namespace tests).
# Runs as root (namespace tests create network namespaces and links); the
# translators the tests start run as the unprivileged user passt-test.
# The VM tests fetch their guest kernel (linux-image-amd64) and busybox-static
# with `apt-get download` at test time (tests/vm/prepare.sh): nothing of it
# is installed.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(busybox isc-dhcp-client qemu-system-x86 cpio socat iperf3 tcpdump tshark iproute2 ethtool iputils-ping nftables dnsutils procps jq python3 util-linux passwd)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	apt-get install -y -q "${missing[@]}"
fi

# The unprivileged user the translators run as, and the tun device open to
# every user as distributions ship it.
test_user=passt-test
if ! id "$test_user" >/dev/null 2>&1; then
	useradd --system --no-create-home --shell /usr/sbin/nologin "$test_user"
fi
if [ -c /dev/net/tun ]; then
	chmod 0666 /dev/net/tun
else
	echo "warning: no /dev/net/tun: the namespace tests will fail" >&2
fi

export PROPTEST_CASES="${PROPTEST_CASES:-256}"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# A hung test fails the run with its output instead of running out the clock.
timeout --kill-after=30s 70m cargo test --workspace --locked --no-fail-fast
