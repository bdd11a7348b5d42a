#!/usr/bin/env bash
# Prepares what the VM tests boot: a guest kernel and a busybox initramfs.
#
#   tests/vm/prepare.sh CACHE_DIR
#
# The kernel comes from the distribution's linux-image-amd64 (the versioned
# package it depends on), fetched with `apt-get download` and unpacked with
# `dpkg-deb -x` into CACHE_DIR: nothing is installed, the machine's /boot is
# not touched. busybox-static is fetched the same way (the machine's own
# busybox package stays as it is). The initramfs is rebuilt on every call
# (a few seconds): busybox, iperf3, socat and dhclient with the libraries
# they load, the kernel modules the virtio NIC needs, and init.sh as /init.
#
# Prints `key=value` lines: kernel, initramfs, kver.
# Needs root (apt-get download writes as root), apt, dpkg-deb, cpio, flock.
set -euo pipefail

cache=${1:?usage: prepare.sh CACHE_DIR}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

# One preparation at a time per cache (test binaries may run side by side).
exec 9>"$cache/lock"
flock -w 600 9

log() { echo "prepare.sh: $*" >&2; }

# Name of the versioned package a metapackage depends on.
dep_of() {
	apt-cache depends "$1" 2>/dev/null | awk -v p="$2" '$1 == "Depends:" && $2 ~ p { print $2; exit }'
}

# `apt-get download PKG` into $cache/debs, once per package version; prints
# the .deb's path.
fetch() {
	local pkg=$1 deb
	mkdir -p "$cache/debs"
	deb=$(ls "$cache/debs/${pkg}_"*.deb 2>/dev/null | head -n1 || true)
	if [ -z "$deb" ]; then
		log "downloading $pkg"
		(cd "$cache/debs" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >&2) || {
			log "download failed: apt-get update, then again"
			apt-get update -q >&2
			(cd "$cache/debs" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >&2)
		}
		deb=$(ls "$cache/debs/${pkg}_"*.deb | head -n1)
	fi
	echo "$deb"
}

kpkg=$(dep_of linux-image-amd64 '^linux-image-[0-9]')
if [ -z "$kpkg" ]; then
	log "apt lists missing or stale: apt-get update"
	apt-get update -q >&2
	kpkg=$(dep_of linux-image-amd64 '^linux-image-[0-9]')
fi
[ -n "$kpkg" ] || { log "no linux-image-amd64 in apt's lists"; exit 1; }

kdir="$cache/$kpkg"
# Older kernels (the distribution moved on) are not needed any more.
for d in "$cache"/linux-image-*; do
	[ ! -e "$d" ] || [ "$d" = "$kdir" ] || rm -rf "$d"
done
for d in "$cache"/debs/linux-image-*.deb; do
	case "${d##*/}" in
	"${kpkg}_"*) ;;
	*) rm -f "$d" ;;
	esac
done
if [ ! -e "$kdir/.done" ]; then
	deb=$(fetch "$kpkg")
	rm -rf "$kdir"
	dpkg-deb -x "$deb" "$kdir"
	touch "$kdir/.done"
fi
kernel=$(ls "$kdir"/boot/vmlinuz-* | head -n1)
kver=${kernel##*/vmlinuz-}
moddir="$kdir/lib/modules/$kver"

bdir="$cache/busybox-static"
if [ ! -e "$bdir/.done" ]; then
	deb=$(fetch busybox-static)
	rm -rf "$bdir"
	dpkg-deb -x "$deb" "$bdir"
	touch "$bdir/.done"
fi
busybox="$bdir/bin/busybox"

root="$cache/root.$$"
rm -rf "$root"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,etc,proc,sys,dev,tmp,run,var/lib/dhcp,lib/modules}

# busybox and a link for each of its applets.
cp "$busybox" "$root/bin/busybox"
for a in $("$busybox" --list); do
	[ "$a" = busybox ] || ln -sf busybox "$root/bin/$a"
done

# Dynamic binaries from the machine, with what they load.
copy_bin() {
	local src dst=$2 lib
	src=$(command -v "$1") || { log "$1 not installed (tests/run.sh installs it)"; exit 1; }
	cp -L "$src" "$root/bin/$dst"
	for lib in $(ldd "$src" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
		mkdir -p "$root$(dirname "$lib")"
		cp -L "$lib" "$root$lib"
	done
}
copy_bin iperf3 iperf3
copy_bin socat socat
copy_bin dhclient dhclient
# Some binaries name the loader through /lib64, others through /lib.
if [ -e "$root/lib64/ld-linux-x86-64.so.2" ] && [ ! -e "$root/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" ]; then
	mkdir -p "$root/lib/x86_64-linux-gnu"
	cp "$root/lib64/ld-linux-x86-64.so.2" "$root/lib/x86_64-linux-gnu/"
fi

# Kernel modules: the virtio NIC (virtio-pci transport, virtio_net) and the
# virtio console, with their dependencies (the "depends=" entry of each
# module's .modinfo section: the package has no modules.dep), in load order.
# Built-in ones have no file and need nothing.
declare -A modfile=()
while IFS= read -r f; do
	n=${f##*/}
	n=${n%%.ko*}
	modfile[${n//-/_}]=$f
done < <(cd "$moddir" && find kernel -name '*.ko*')
unpack_mod() {
	case "$1" in
	*.ko) cat "$1" ;;
	*.ko.xz) xz -dc "$1" ;;
	*.ko.zst) zstd -qdc "$1" ;;
	*.ko.gz) gzip -dc "$1" ;;
	esac
}
declare -A seen=()
: >"$root/etc/modules"
add_mod() {
	local name=${1//-/_} f deps d
	f=${modfile[$name]:-}
	[ -n "$f" ] || return 0
	[ -z "${seen[$name]:-}" ] || return 0
	seen[$name]=1
	unpack_mod "$moddir/$f" >"$root/lib/modules/$name.ko"
	deps=$(tr '\0' '\n' <"$root/lib/modules/$name.ko" | sed -n 's/^depends=//p' | head -n1)
	for d in ${deps//,/ }; do
		add_mod "$d"
	done
	echo "$name" >>"$root/etc/modules"
}
for m in virtio_pci virtio_net virtio_console; do
	add_mod "$m"
done

cp "$here/init.sh" "$root/init"
chmod 755 "$root/init"
cp "$here/dhclient-script.sh" "$root/bin/dhclient-script"
cp "$here/udhcpc-script.sh" "$root/bin/udhcpc-script"
cp "$here/vm.sh" "$root/lib/vm.sh"
chmod 755 "$root/bin/dhclient-script" "$root/bin/udhcpc-script"
echo "root:x:0:0:root:/:/bin/sh" >"$root/etc/passwd"
echo "root:x:0:" >"$root/etc/group"

(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet -R 0:0) >"$cache/initramfs.cpio.tmp"
mv "$cache/initramfs.cpio.tmp" "$cache/initramfs.cpio"

echo "kernel=$kernel"
echo "initramfs=$cache/initramfs.cpio"
echo "kver=$kver"
