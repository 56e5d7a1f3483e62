# Helpers for the guest scenarios (busybox sh). Sourced by scenarios.sh.
#
# Reporting: a scenario is a function; `scenario NAME` runs scenario_NAME
# and prints "VMTEST PASS NAME" unless the function called `fail`, which
# prints "VMTEST FAIL NAME: reason" (the host makes each a subtest).

# shellcheck source=/dev/null # written by the host: DISK_* (controller
# serial and namespace ID), ERR_*_OFFSET
. /guest/env

KiB=1024
MiB=1048576
GUARD=$((64 * KiB)) # sentinel bytes on each side of a destination range

name=
errors=0

fail() {
	echo "VMTEST FAIL $name: $*"
	errors=$((errors + 1))
}

scenario() {
	name=$1
	errors=0
	echo "=== $name (uptime $(cut -d' ' -f1 /proc/uptime)s)"
	"scenario_$(echo "$1" | tr / _)"
	[ "$errors" = 0 ] && echo "VMTEST PASS $name"
	return 0
}

# shellcheck source=test/vm/guest/nvmedev.sh
. /guest/nvmedev.sh

# sysfs_queue DEV ATTR prints a queue limit of DEV's disk (a partition has
# no queue/ of its own), or nothing when the kernel lacks the attribute.
sysfs_queue() {
	b=/sys/class/block/${1##*/}
	[ -e "$b/partition" ] && b=$b/..
	[ -r "$b/queue/$2" ] && cat "$b/queue/$2"
	return 0
}

# offloads DEV: the kernel would offload copies on DEV.
offloads() {
	[ "$(sysfs_queue "$1" copy_max_hw_bytes)" -gt 0 ] 2>/dev/null &&
		[ "$(sysfs_queue "$1" copy_max_bytes)" -gt 0 ] 2>/dev/null
}

# Byte ranges, always read and written past the page cache's copy of the
# device, since blkcopy does its I/O with O_DIRECT. Under TCG every byte
# costs: block-aligned writes go with O_DIRECT in 1 MiB blocks (buffered
# 64 KiB writes are several times slower), and sums are md5 (sha256 is
# three times slower; this detects misplaced data, not attacks).
rd() { # rd DEV OFFSET LEN: the bytes on stdout
	blockdev --flushbufs "$1"
	dd if="$1" bs=1M iflag=skip_bytes,count_bytes,fullblock skip="$2" count="$3" status=none
}
wr() { # wr DEV OFFSET LEN < DATA
	if [ $(($2 % 4096)) = 0 ] && [ $(($3 % 4096)) = 0 ]; then
		dd of="$1" bs=1M iflag=fullblock oflag=seek_bytes,direct seek="$2" status=none
	else
		dd of="$1" bs=64K iflag=fullblock oflag=seek_bytes seek="$2" conv=notrunc,fsync status=none
	fi
	blockdev --flushbufs "$1"
}
sum() { # sum DEV OFFSET LEN: checksum of the range
	rd "$@" | md5sum | cut -d' ' -f1
}

# random_fill DEV OFFSET LEN writes data no earlier fill wrote: fresh random
# bytes for each call, each MiB stamped with its index so a copy that
# misplaces whole MiBs is caught too. (Reading LEN bytes of /dev/urandom
# costs about a second per 10 MiB under TCG.)
random_fill() {
	head -c "$MiB" /dev/urandom >/tmp/random
	i=0
	while [ $((i * MiB)) -lt "$3" ]; do
		printf '%016d' $i
		head -c $((MiB - 16)) /tmp/random
		i=$((i + 1))
	done | head -c "$3" | wr "$1" "$2" "$3"
}

# Sentinels: random bytes written just before and just after a destination
# range, checked after the copy. A copy that writes one block too far (or
# too early) changes them.
head -c "$GUARD" /dev/urandom >/tmp/guard

guard_set() { # guard_set DEV OFFSET LEN
	if [ "$2" -ge "$GUARD" ]; then
		wr "$1" $(($2 - GUARD)) "$GUARD" </tmp/guard
	fi
	if [ $(($2 + $3 + GUARD)) -le "$(blockdev --getsize64 "$1")" ]; then
		wr "$1" $(($2 + $3)) "$GUARD" </tmp/guard
	fi
}

guard_check() { # guard_check DEV OFFSET LEN; fails the scenario if touched
	if [ "$2" -ge "$GUARD" ] &&
		! rd "$1" $(($2 - GUARD)) "$GUARD" | cmp -s /tmp/guard -; then
		fail "$1: the $GUARD bytes before offset $2 changed"
	fi
	if [ $(($2 + $3 + GUARD)) -le "$(blockdev --getsize64 "$1")" ] &&
		! rd "$1" $(($2 + $3)) "$GUARD" | cmp -s /tmp/guard -; then
		fail "$1: the $GUARD bytes after offset $(($2 + $3)) changed"
	fi
}

# json_field FIELD < JSON prints the value of a number, bool or string
# field (busybox has no jq; blkcopy's objects are flat).
json_field() {
	grep -o "\"$1\": *\(\"[^\"]*\"\|[0-9a-z]*\)" | head -n 1 | sed 's/^[^:]*: *//; s/^"//; s/"$//'
}

# NVMe Copy commands blkcopy reported sending by passthrough (JSON
# offload_requests of copies whose offload_path is nvme); the host compares
# the sum with QEMU's trace.
NVME_CMDS=0
count_cmds() { # count_cmds JSON
	if [ "$(echo "$1" | json_field offload_path)" = nvme ]; then
		NVME_CMDS=$((NVME_CMDS + $(echo "$1" | json_field offload_requests)))
	fi
}

expect_eq() { # expect_eq WHAT WANT GOT
	[ "$2" = "$3" ] || fail "$1: want $2, got $3"
}
