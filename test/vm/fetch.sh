#!/bin/sh
# fetch.sh: get the parts of the VM test rig from apt.
#
#   test/vm/fetch.sh packages   apt-get install what the host needs (root)
#   test/vm/fetch.sh kernel     download and unpack Debian's current kernel
#                               into the cache; prints KERNEL=... MODULES=...
#   test/vm/fetch.sh            both
#
# Idempotent: packages already installed and a kernel already unpacked are
# left alone, and `apt-get update` runs only when apt cannot find what it
# needs. The cache is $BLKCOPY_VM_CACHE, default ~/.cache/blkcopy-vm.
set -eu

cache=${BLKCOPY_VM_CACHE:-$HOME/.cache/blkcopy-vm}
packages="qemu-system-x86 busybox-static open-iscsi"

log() { echo "fetch.sh: $*" >&2; }

updated=
apt_update() {
	[ -n "$updated" ] && return 1
	log "apt-get update"
	apt-get update -qq >&2
	updated=1
}

install_packages() {
	missing=
	for p in $packages; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' ||
			missing="$missing $p"
	done
	[ -z "$missing" ] && return 0
	log "installing$missing"
	# shellcheck disable=SC2086 # one word per package
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >&2 ||
		{ apt_update && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >&2; }
}

# kernel_package names the package linux-image-amd64 depends on, e.g.
# linux-image-6.1.0-56-amd64. Download only that one: a glob matches dozens
# of kernels.
kernel_package() {
	apt-cache depends linux-image-amd64 2>/dev/null |
		awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }'
}

fetch_kernel() {
	pkg=$(kernel_package)
	if [ -z "$pkg" ]; then
		apt_update || true
		pkg=$(kernel_package)
	fi
	[ -n "$pkg" ] || { log "cannot resolve linux-image-amd64"; exit 1; }

	dir=$cache/$pkg
	if [ ! -e "$dir/.unpacked" ]; then
		mkdir -p "$cache"
		tmp=$(mktemp -d "$cache/download.XXXXXX")
		log "downloading $pkg"
		(cd "$tmp" && apt-get download -qq "$pkg" >&2) ||
			{ apt_update && (cd "$tmp" && apt-get download -qq "$pkg" >&2); }
		rm -rf "$dir"
		dpkg -x "$tmp"/"$pkg"_*.deb "$dir"
		rm -rf "$tmp"
		touch "$dir/.unpacked"
	fi

	kernel=$(ls "$dir"/boot/vmlinuz-* | head -n 1)
	modules=$(ls -d "$dir"/lib/modules/* | head -n 1)
	echo "KERNEL=$kernel"
	echo "MODULES=$modules"
}

case ${1:-all} in
packages) install_packages ;;
kernel) fetch_kernel ;;
all)
	install_packages
	fetch_kernel
	;;
*)
	echo "usage: $0 [packages|kernel]" >&2
	exit 2
	;;
esac
