#!/bin/busybox sh
# PID 1 of the offload benchmark's VM (go run ./bench --offload): mount the
# pseudo file systems, load the modules the host picked, then on each
# namespace copy SIZE bytes from offset 0 to offset SIZE with every tool in
# turn, round after round, and report each copy on the console:
#
#   BENCH INFO key=value ...              facts about a namespace
#   BENCH COPY k=K shape=S tool=T round=R rc=N sum=1|0 secs=... rd_ios=...
#   BENCH JSON K {...}                    blkcopy's --json summary of copy K
#   BENCH ERR K message                   a tool's stderr when it failed
#   BENCH FAIL message                    a setup or check failure
#   BENCH DONE
#
# Copy K is bracketed by Copy commands on the marker namespace (marks 2K+1
# and 2K+2 in QEMU's trace), so the host can tell which traced commands and
# reads belong to it.
/bin/busybox --install -s /bin
export PATH=/bin:/usr/sbin
# nvme-cli's shared libraries, when the host added it (Debian's kernel).
export LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /tmp

if [ -s /modules/order ]; then
	while read -r ko args; do
		# shellcheck disable=SC2086 # module parameters are separate words
		insmod "/modules/$ko" $args || echo "BENCH FAIL insmod $ko $args"
	done </modules/order
fi

# shellcheck source=/dev/null # written by the host: KERNEL_KIND, SIZE,
# RUNS, WARMUP, TOOLS, SHAPES, SHAPE_<n>="serial nsid", SRC_MD5_<n>,
# TAIL_MD5, MARK="serial nsid", BLKCOPY_ARGS (more flags for the
# offloaded blkcopy), FABRIC (set: copy on each namespace through an
# NVMe/TCP export of it on 127.0.0.1)
. /guest/env

MiB=1048576

# shellcheck source=test/vm/guest/nvmedev.sh
. /guest/nvmedev.sh
if [ -n "${FABRIC:-}" ]; then
	# shellcheck source=test/vm/guest/nvmet.sh
	. /guest/nvmet.sh
fi

# sum DEV OFF LEN: md5 of a range, read with O_DIRECT (vmhelper's Go md5:
# busybox md5sum took 3.2 s for 64 MiB under TCG, vmhelper 0.7 s).
sum() {
	vmhelper sum "$@"
}

# shellcheck disable=SC2086 # "serial nsid" are two words
mark_dev=$(wait_nvme_dev $MARK) || {
	echo "BENCH FAIL marker namespace $MARK did not appear"
	reboot -f
}
marks=0
mark() {
	nvmecopy "$mark_dev" 0 1 1 || echo "BENCH FAIL marker copy on $mark_dev failed"
	marks=$((marks + 1))
}

k=0
# copy_once SHAPE TOOL ROUND DEV: one timed copy of the range and its check.
copy_once() {
	shape=$1 tool=$2 round=$3 dev=$4
	blocks4m=$((SIZE / (4 * MiB)))
	case $tool in
	blkcopy)
		# shellcheck disable=SC2086 # BLKCOPY_ARGS: separate flags
		set -- blkcopy "$dev" "$dev" --src-offset 0 --dst-offset "$SIZE" --len "$SIZE" --json --progress never $BLKCOPY_ARGS
		;;
	onload) set -- blkcopy "$dev" "$dev" --src-offset 0 --dst-offset "$SIZE" --len "$SIZE" --json --progress never --mode onload ;;
	dd) set -- dd if="$dev" of="$dev" bs=4M count=$blocks4m seek=$blocks4m iflag=direct oflag=direct conv=fsync status=none ;;
	cfr) set -- vmhelper cfr "$dev" 0 "$SIZE" "$SIZE" ;;
	nvme) set -- sh "/guest/nvmeloop-$shape.sh" "$dev" ;;
	*)
		echo "BENCH FAIL unknown tool $tool"
		return
		;;
	esac
	vmhelper zero "$dev" "$SIZE" "$SIZE" || echo "BENCH FAIL zero $dev $SIZE+$SIZE"
	rm -f /tmp/m
	mark
	vmhelper time -o /tmp/m -stat "${dev#/dev/}" -- "$@" >/tmp/out 2>/tmp/err
	rc=$?
	mark
	ok=0
	[ "$(sum "$dev" "$SIZE" "$SIZE")" = "$want" ] && ok=1
	echo "BENCH COPY k=$k shape=$shape tool=$tool round=$round rc=$rc sum=$ok $(cat /tmp/m 2>/dev/null)"
	case $tool in
	blkcopy | onload) echo "BENCH JSON $k $(tr -d '\n' </tmp/out)" ;;
	cfr) echo "BENCH INFO k=$k $(cat /tmp/out)" ;;
	esac
	[ "$rc" = 0 ] || echo "BENCH ERR $k $(head -c 400 /tmp/err | tr '\n' ' ')"
	k=$((k + 1))
}

# startup NAME ARGV...: what starting a program costs here (TCG), three times.
startup() {
	what=$1
	shift
	for i in 1 2 3; do
		vmhelper time -o /tmp/m -stat "${mark_dev#/dev/}" -- "$@" >/dev/null 2>&1
		echo "BENCH INFO startup=$what $(cut -d' ' -f1 /tmp/m)"
	done
}

echo "BENCH INFO kernel=$(uname -r) kind=$KERNEL_KIND"
startup blkcopy_version blkcopy version
startup vmhelper vmhelper
case " $TOOLS " in *" nvme "*) startup nvme_version nvme version ;; esac
for shape in $SHAPES; do
	eval "spec=\$SHAPE_$shape want=\$SRC_MD5_$shape"
	# shellcheck disable=SC2086,SC2154 # spec is set by eval
	dev=$(wait_nvme_dev $spec) || {
		echo "BENCH FAIL shape $shape: namespace $spec did not appear"
		continue
	}
	if [ -n "${FABRIC:-}" ]; then
		back=$dev
		dev=$(nvmet_tcp_export "$back" "fabric-$shape" $((4420 + shape))) || {
			echo "BENCH FAIL shape $shape: exporting $back over NVMe/TCP failed"
			continue
		}
		echo "BENCH INFO shape=$shape fabric=$dev backing=$back"
	fi
	q=/sys/block/${dev#/dev/}/queue
	echo "BENCH INFO shape=$shape dev=$dev lbs=$(cat $q/logical_block_size)" \
		"copy_max_bytes=$(cat $q/copy_max_bytes 2>/dev/null || echo none)" \
		"copy_max_hw_bytes=$(cat $q/copy_max_hw_bytes 2>/dev/null || echo none)" \
		"max_hw_sectors_kb=$(cat $q/max_hw_sectors_kb)"
	blkcopy limits "$dev" 2>&1 | sed 's/^/limits: /'
	blkcopy "$dev" "$dev" --src-offset 0 --dst-offset "$SIZE" --len "$SIZE" --dry-run 2>&1 | sed 's/^/dry-run: /'
	startup "blkcopy_dry_run_$shape" blkcopy "$dev" "$dev" --src-offset 0 --dst-offset "$SIZE" --len "$SIZE" --dry-run
	# shellcheck disable=SC2154 # want is set by eval
	got=$(sum "$dev" 0 "$SIZE")
	if [ "$got" != "$want" ]; then
		echo "BENCH FAIL shape $shape: the source range reads $got, the host wrote $want"
		continue
	fi
	round=0
	while [ $round -lt $((WARMUP + RUNS)) ]; do
		for tool in $TOOLS; do
			copy_once "$shape" "$tool" "$round" "$dev"
		done
		# No tool may write outside its destination range: the source and
		# the MiB after the destination still read as the host left them.
		[ "$(sum "$dev" 0 "$SIZE")" = "$want" ] ||
			echo "BENCH FAIL shape $shape round $round: the source range changed"
		[ "$(sum "$dev" $((2 * SIZE)) "$MiB")" = "$TAIL_MD5" ] ||
			echo "BENCH FAIL shape $shape round $round: the MiB after the destination changed"
		round=$((round + 1))
	done
done
echo "BENCH INFO marks=$marks"
echo "BENCH DONE"
sync
# With QEMU's -no-reboot a reboot ends QEMU on every kernel; poweroff only
# halts a kernel built without ACPI (the seed kernel).
reboot -f
