#!/bin/bash
# seed-tcp.sh: the fixed seed kernel (../shared/seed-kernel) plus TCP/IP and
# NVMe over TCP, host and target, so a guest can export a namespace with
# nvmet-tcp on its loopback interface and reach it through nvme-tcp: an
# NVMe namespace at the far end of a link, where a copy through the host
# moves every byte over the link twice and an offloaded copy sends a
# command. The offload benchmark's `seed-tcp` kernel.
#
#   test/vm/seed-tcp.sh [OUT]   default OUT: $BLKCOPY_SEED_KERNEL_DIR, else
#                               ~/.cache/blkcopy-seed-kernel (build.sh's)
#
# Needs ../shared/seed-kernel/build.sh to have run (it leaves the patched
# source, tag `fixed`, in OUT/src). Builds in a git worktree of that tree,
# so the seed kernels' own build is untouched; about 5 minutes on 2 cores,
# then it only prints the path of OUT/bzImage-fixed-tcp.
#
# Four more fixes to the series, in seed-tcp.patch, all found by this
# rig: (6) nvme-tcp sends a Copy command's descriptors (the request is
# REQ_OP_COPY_SRC, which the block layer counts as a read, so they were
# never sent and every Copy over TCP hung); (7) the
# NVMe target keeps a copy's parameters until it completes (the series
# kept them on the stack of a function that had returned: the command
# never completed) and accepts descriptor format 0h, which has no
# namespace ID, as OCFS now says; (8) blkdev_copy_offload() counts one
# completion per copy context, not one per source bio: a Copy of two or
# more ranges received by the target never completed; (9) a copy request
# whose first bio is a source bio sees its other source bios (the walk
# stopped at the first, which had been unlinked from the context's list):
# such a Copy then copied its first range only and reported success.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${1:-${BLKCOPY_SEED_KERNEL_DIR:-$HOME/.cache/blkcopy-seed-kernel}}
OUT=$(cd "$OUT" && pwd)
IMG=$OUT/bzImage-fixed-tcp
# The image is rebuilt when this script or its patch changes.
STAMP=$(cat "$HERE/seed-tcp.sh" "$HERE/seed-tcp.patch" | sha256sum | cut -c1-16)
if [ -s "$IMG" ] && [ "$(cat "$IMG.stamp" 2>/dev/null)" = "$STAMP" ]; then
	echo "$IMG"
	exit 0
fi
SRC=$OUT/src/linux-source-6.12
if ! git -C "$SRC" rev-parse -q --verify fixed >/dev/null 2>&1; then
	echo "seed-tcp.sh: no seed kernel source with tag 'fixed' in $SRC; run ../shared/seed-kernel/build.sh first" >&2
	exit 1
fi
WT=$OUT/src/tcp
if [ ! -d "$WT" ]; then
	git -C "$SRC" worktree prune
	git -C "$SRC" worktree add -q --detach "$WT" fixed
fi
cd "$WT"
# Fixes 6-9 (above) on a clean checkout of the fixed seed kernel.
git checkout -q -f fixed
git apply "$HERE/seed-tcp.patch"
# Start from the seed kernels' config (all drivers built in) and add the
# network stack and NVMe/TCP. No IPv6: the link is 127.0.0.1.
CONFIG=$HERE/../../../shared/seed-kernel/config
[ -s "$CONFIG" ] || CONFIG=$SRC/.config # build.sh leaves it there too
cp "$CONFIG" .config
scripts/config --enable NET --enable INET --enable UNIX \
	--disable IPV6 --disable WIRELESS --disable WLAN --disable NETFILTER \
	--enable NVME_TCP --enable NVME_TARGET_TCP
make olddefconfig >/dev/null
for opt in CONFIG_INET CONFIG_NVME_TCP CONFIG_NVME_TARGET_TCP CONFIG_NVME_TARGET; do
	grep -qx "$opt=y" .config || {
		echo "seed-tcp.sh: $opt did not stay set (make olddefconfig dropped it)" >&2
		exit 1
	}
done
make -j"$(nproc)" bzImage >"$OUT/build-fixed-tcp.log" 2>&1 || {
	tail -30 "$OUT/build-fixed-tcp.log"
	exit 1
}
cp arch/x86/boot/bzImage "$IMG.tmp"
mv "$IMG.tmp" "$IMG"
echo "$STAMP" >"$IMG.stamp"
echo "$IMG"
