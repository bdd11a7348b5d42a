#!/usr/bin/env bash
# Installs what the tests need, then runs every check: formatting, lints and the
# whole test suite (unit, property, snapshot, replay and namespace tests).
# Runs as root (namespace tests create network namespaces and tap devices).
# The VM tests fetch their guest kernel (linux-image-amd64) and busybox-static
# with `apt-get download` at test time (tests/vm/prepare.sh): nothing of it
# is installed.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(busybox isc-dhcp-client qemu-system-x86 cpio socat iperf3 tcpdump tshark iproute2 iputils-ping nftables dnsutils procps jq python3)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	apt-get install -y -q "${missing[@]}"
fi

export PROPTEST_CASES="${PROPTEST_CASES:-256}"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
