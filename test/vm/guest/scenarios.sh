# The VM scenarios (busybox sh), one function per scenario. Sourced by
# /init after the modules are loaded; run_all runs them in order.
#
# Disk layout (the host makes the images, see vm_test.go):
#   A  nvme-a ns 1, 512 B blocks, 256 MiB:  MBR; p1 1-33 MiB, p2 33-65 MiB,
#      p3 65-73 MiB (ext2, mounted by the mounted_destination scenario);
#      free space from 80 MiB for copies.
#   B  nvme-a ns 2, 512 B blocks, 64 MiB: another namespace, same controller.
#   C  nvme-c ns 1, 4096 B blocks, 256 MiB.
#   E  nvme-e ns 1, 512 B blocks, 64 MiB, behind QEMU's blkdebug: reads at
#      ERR_READ_OFFSET and writes at ERR_WRITE_OFFSET fail with a medium error.

# shellcheck source=test/vm/guest/lib.sh
. /guest/lib.sh

wait_for_disks() {
	i=0
	while [ $i -lt 100 ]; do
		# shellcheck disable=SC2086 # DISK_X is "serial nsid"
		A=$(nvme_dev $DISK_A) && B=$(nvme_dev $DISK_B) &&
			C=$(nvme_dev $DISK_C) && E=$(nvme_dev $DISK_E) && return 0
		sleep 0.1
		i=$((i + 1))
	done
	echo "VMTEST FAIL boot: NVMe namespaces did not appear: $(ls /sys/block)"
	return 1
}

# The kernel offers offload for NVMe copies when the namespaces report copy
# limits; on Debian's kernel the attributes do not exist.
report_kernel() {
	echo "kernel $(uname -r); A=$A B=$B C=$C E=$E"
	for d in "$A" "$C"; do
		echo "$d: copy_max_hw_bytes=$(sysfs_queue "$d" copy_max_hw_bytes)" \
			"copy_max_bytes=$(sysfs_queue "$d" copy_max_bytes)"
	done
	OFFLOAD=0
	offloads "$A" && OFFLOAD=1
	echo "VMTEST INFO offload=$OFFLOAD"
}

scenario_setup_partitions() {
	# n(ew) p(rimary) number first last, three times, then w(rite).
	printf 'o\nn\np\n1\n2048\n67583\nn\np\n2\n67584\n133119\nn\np\n3\n133120\n149503\nw\n' |
		fdisk -u "$A" >/tmp/fdisk.log 2>&1
	blockdev --rereadpt "$A" 2>/dev/null
	mdev -s
	A1=${A}p1 A2=${A}p2 A3=${A}p3
	for p in "$A1" "$A2" "$A3"; do
		[ -b "$p" ] || fail "no $p after fdisk: $(cat /tmp/fdisk.log)"
	done
	expect_eq "$A1 start sector" 2048 "$(cat /sys/class/block/${A1##*/}/start)"
	expect_eq "$A1 size" $((32 * MiB)) "$(blockdev --getsize64 "$A1")"
}

# One NVMe Copy command by passthrough, bypassing the block layer: proves
# QEMU copies and that its pci_nvme_copy trace reaches the host's count.
scenario_nvme_copy_probe() {
	random_fill "$A" $((240 * MiB)) $((64 * KiB))
	want=$(sum "$A" $((240 * MiB)) $((64 * KiB)))
	nvmecopy "$A" $((240 * MiB / 512)) $((248 * MiB / 512)) 128 ||
		fail "nvmecopy: NVMe Copy failed"
	echo "VMTEST INFO probe_copies=1"
	expect_eq "copied by the device" "$want" "$(sum "$A" $((248 * MiB)) $((64 * KiB)))"
}

# limits_check DEV: blkcopy limits DEV --json agrees with the kernel.
limits_check() {
	dev=$1
	if ! out=$(blkcopy limits "$dev" --json 2>/tmp/err); then
		fail "blkcopy limits $dev: $(cat /tmp/err)"
		return
	fi
	echo "$out"
	expect_eq "$dev path" "$dev" "$(echo "$out" | json_field path)"
	expect_eq "$dev size" "$(blockdev --getsize64 "$dev")" "$(echo "$out" | json_field size)"
	expect_eq "$dev logical_block_size" "$(blockdev --getss "$dev")" \
		"$(echo "$out" | json_field logical_block_size)"
	expect_eq "$dev physical_block_size" "$(sysfs_queue "$dev" physical_block_size)" \
		"$(echo "$out" | json_field physical_block_size)"
	hw=$(sysfs_queue "$dev" copy_max_hw_bytes)
	if [ -n "$hw" ]; then
		expect_eq "$dev kernel_copy_offload" true "$(echo "$out" | json_field kernel_copy_offload)"
		expect_eq "$dev copy_max_hw_bytes" "$hw" "$(echo "$out" | json_field copy_max_hw_bytes)"
		expect_eq "$dev copy_max_bytes" "$(sysfs_queue "$dev" copy_max_bytes)" \
			"$(echo "$out" | json_field copy_max_bytes)"
	else
		expect_eq "$dev kernel_copy_offload" false "$(echo "$out" | json_field kernel_copy_offload)"
		expect_eq "$dev verdict" "no offload: kernel lacks copy offload" \
			"$(echo "$out" | json_field verdict)"
	fi
	want=false
	offloads "$dev" && want=true
	expect_eq "$dev offload" "$want" "$(echo "$out" | json_field offload)"
	# The table for people: the device's row says "no offload" exactly
	# when the kernel would not offload on it.
	if ! table=$(blkcopy limits "$dev" 2>/tmp/err); then
		fail "blkcopy limits $dev (table): $(cat /tmp/err)"
	fi
	echo "$table"
	row=$(echo "$table" | grep "^$dev ")
	case $want:$row in
	*:) fail "limits table has no row for $dev" ;;
	true:*"no offload"*) fail "limits table says no offload for $dev: $row" ;;
	false:*"no offload"*) ;;
	false:*) fail "limits table does not say 'no offload' for $dev: $row" ;;
	esac
}

scenario_limits() {
	head -c $((16 * MiB)) /dev/zero >/tmp/loop.img
	LOOP=$(losetup -f)
	losetup "$LOOP" /tmp/loop.img || fail "losetup $LOOP"
	for dev in "$A" "$B" "$C" "$A1" /dev/nullb0 "$LOOP"; do
		limits_check "$dev"
	done
	expect_eq "null_blk logical_block_size" 4096 "$(blockdev --getss /dev/nullb0)"
	expect_eq "C logical_block_size" 4096 "$(blockdev --getss "$C")"
	losetup -d "$LOOP"
}

# copy_check SRC SOFF DST DOFF LEN OFFLOAD [blkcopy flags...]: random source
# data, sentinels around the destination, blkcopy --verify --json, then the
# destination must hold the source's old bytes and the sentinels must be
# intact. OFFLOAD says what offloaded_bytes must be: "all", "none".
copy_check() {
	src=$1 soff=$2 dst=$3 doff=$4 len=$5 want_offload=$6
	shift 6
	random_fill "$src" "$soff" "$len"
	guard_set "$dst" "$doff" "$len"
	# After guard_set: for overlapping ranges the sentinel before or after
	# the destination lies in the source, and memmove semantics copy it.
	want=$(sum "$src" "$soff" "$len")
	out=$(blkcopy "$src" "$dst" --src-offset "$soff" --dst-offset "$doff" --len "$len" \
		--verify --json --progress never "$@" 2>/tmp/err)
	rc=$?
	echo "$out"
	if [ $rc != 0 ]; then
		fail "blkcopy $src $dst: exit $rc: $(cat /tmp/err)"
		return
	fi
	expect_eq "destination checksum" "$want" "$(sum "$dst" "$doff" "$len")"
	guard_check "$dst" "$doff" "$len"
	expect_eq "bytes" "$len" "$(echo "$out" | json_field bytes)"
	expect_eq "verified" true "$(echo "$out" | json_field verified)"
	off=$(echo "$out" | json_field offloaded_bytes)
	case $want_offload in
	all) expect_eq "offloaded_bytes (kernel offloads)" "$len" "$off" ;;
	none) expect_eq "offloaded_bytes" 0 "$off" ;;
	esac
}

# Same namespace, aligned: offloaded exactly when the kernel offloads.
same_disk_offload() {
	if [ "$OFFLOAD" = 1 ]; then echo all; else echo none; fi
}

scenario_copy_same_namespace() {
	copy_check "$A" $((80 * MiB)) "$A" $((90 * MiB)) $((4 * MiB)) "$(same_disk_offload)"
}

scenario_copy_same_namespace_4k() {
	copy_check "$C" $((8 * MiB)) "$C" $((20 * MiB)) $((3 * MiB + 8192)) "$(same_disk_offload)"
}

# Different disks are never offloaded: the posted kernel series sends a
# cross-namespace Copy to the source namespace.
scenario_copy_other_namespace() {
	copy_check "$A" $((100 * MiB)) "$B" $((8 * MiB)) $((4 * MiB)) none
}

scenario_copy_other_controller() {
	copy_check "$A" $((100 * MiB)) "$C" $((40 * MiB)) $((4 * MiB)) none
}

scenario_copy_partition() {
	copy_check "$A1" $((1 * MiB)) "$A2" $((2 * MiB)) $((5 * MiB)) "$(same_disk_offload)"
}

# Overlapping ranges on one namespace: the result must equal a copy through
# a buffer, whichever direction the ranges overlap.
scenario_copy_overlap_forward() {
	copy_check "$A" $((110 * MiB)) "$A" $((110 * MiB + 1536 * KiB)) $((6 * MiB)) any
}

scenario_copy_overlap_backward() {
	copy_check "$A" $((130 * MiB + 1536 * KiB)) "$A" $((130 * MiB)) $((6 * MiB)) any
}

# Byte ranges that are not block multiples on the 4096 B namespace: the
# unaligned head and tail go through the host.
scenario_copy_unaligned_4k() {
	copy_check "$C" $((60 * MiB + 1000)) "$C" $((70 * MiB + 3333)) $((2 * MiB + 12345)) any
	copy_check "$A" $((150 * MiB + 700)) "$C" $((80 * MiB + 100)) $((MiB + 1)) none
}

# io_error_check WHICH DEV ERR SRC SOFF DST DOFF LEN: the copy must stop
# with exit 1, naming DEV and an offset within one I/O of ERR, and leave
# the destination's surroundings alone.
io_error_check() {
	which=$1 dev=$2 err=$3 src=$4 soff=$5 dst=$6 doff=$7 len=$8
	io=$((256 * KiB))
	guard_set "$dst" "$doff" "$len"
	blkcopy "$src" "$dst" --src-offset "$soff" --dst-offset "$doff" --len "$len" \
		--chunk "$io" --progress never 2>/tmp/err
	rc=$?
	msg=$(cat /tmp/err)
	echo "exit $rc: $msg"
	expect_eq "exit status" 1 "$rc"
	case $msg in
	*"$which $dev at offset "*) ;;
	*) fail "error does not say '$which $dev at offset N': $msg" ;;
	esac
	at=$(echo "$msg" | sed -n 's/.* at offset \([0-9]*\).*/\1/p')
	if [ -z "$at" ] || [ "$at" -gt "$err" ] || [ "$at" -le $((err - io)) ]; then
		fail "reported offset '$at' is not the I/O that covers byte $err: $msg"
	fi
	guard_check "$dst" "$doff" "$len"
}

scenario_io_error_read() {
	io_error_check read "$E" "$ERR_READ_OFFSET" \
		"$E" $((ERR_READ_OFFSET - 3 * MiB + 4096)) "$A" $((170 * MiB)) $((4 * MiB))
}

scenario_io_error_write() {
	io_error_check write "$E" "$ERR_WRITE_OFFSET" \
		"$A" $((180 * MiB)) "$E" $((ERR_WRITE_OFFSET - 3 * MiB + 4096)) $((4 * MiB))
}

# SIGTERM in the middle of a large copy: exit 130 and a resume command that
# finishes the job.
scenario_interrupt() {
	len=$((24 * MiB)) soff=$((200 * MiB)) doff=$((100 * MiB))
	random_fill "$A" "$soff" "$len"
	guard_set "$C" "$doff" "$len"
	want=$(sum "$A" "$soff" "$len")
	blkcopy "$A" "$C" --src-offset "$soff" --dst-offset "$doff" --len "$len" \
		--chunk 64K --progress never 2>/tmp/err &
	pid=$!
	# Signal once the copy has written 1 MiB (wchar counts the bytes its
	# write calls moved), so the signal lands mid-copy however fast it runs.
	while [ -r /proc/$pid/io ] &&
		[ "$(sed -n 's/^wchar: //p' /proc/$pid/io)" -lt "$MiB" ] 2>/dev/null; do
		sleep 0.02
	done
	kill -TERM $pid
	wait $pid
	rc=$?
	cat /tmp/err
	if [ $rc = 0 ]; then
		fail "the copy finished before SIGTERM arrived; make it larger"
		return
	fi
	expect_eq "exit status after SIGTERM" 130 "$rc"
	resume=$(sed -n 's/^blkcopy: resume with: //p' /tmp/err)
	if [ -z "$resume" ]; then
		fail "no 'blkcopy: resume with: ' line: $(cat /tmp/err)"
		return
	fi
	if ! eval "$resume" 2>/tmp/err; then
		fail "resume command failed: $resume: $(cat /tmp/err)"
	fi
	expect_eq "destination checksum after resume" "$want" "$(sum "$C" "$doff" "$len")"
	guard_check "$C" "$doff" "$len"
}

# A destination with a mounted file system is refused and left alone, and
# so is the disk under it. The file system rewrites its superblock on every
# sync, so the bytes checked are a range of free blocks: random data put
# there before mke2fs (which does not zero data blocks), the range the
# refused copy would have written.
scenario_mounted_destination() {
	off=$((4 * MiB))
	random_fill "$A3" "$off" "$MiB"
	mke2fs -q "$A3" >/dev/null 2>&1 || fail "mke2fs $A3"
	mount "$A3" /mnt || {
		fail "mount $A3"
		return
	}
	echo data >/mnt/file
	sync
	before=$(sum "$A3" "$off" "$MiB")
	blkcopy "$A1" "$A3" --src-offset 0 --dst-offset "$off" --len "$MiB" --progress never 2>/tmp/err
	expect_eq "exit status, mounted partition" 1 "$?"
	cat /tmp/err
	grep -q "in use" /tmp/err || fail "error does not say 'in use': $(cat /tmp/err)"
	expect_eq "free blocks of the mounted partition" "$before" "$(sum "$A3" "$off" "$MiB")"

	# The whole disk: the kernel refuses O_EXCL on a disk with a claimed
	# partition, and blkcopy must say so rather than write under the mount.
	disk_before=$(sum "$A" $((200 * MiB)) "$MiB")
	blkcopy "$B" "$A" --src-offset 0 --dst-offset $((200 * MiB)) --len "$MiB" --progress never 2>/tmp/err
	expect_eq "exit status, disk under a mounted partition" 1 "$?"
	cat /tmp/err
	grep -q "in use" /tmp/err || fail "error does not say 'in use': $(cat /tmp/err)"
	expect_eq "disk under the mount" "$disk_before" "$(sum "$A" $((200 * MiB)) "$MiB")"
	expect_eq "file on the mounted file system" data "$(cat /mnt/file)"
	umount /mnt
}

run_all() {
	wait_for_disks || return
	report_kernel
	scenario setup_partitions
	scenario nvme_copy_probe
	scenario limits
	scenario copy/same_namespace
	scenario copy/same_namespace_4k
	scenario copy/other_namespace
	scenario copy/other_controller
	scenario copy/partition
	scenario copy/overlap_forward
	scenario copy/overlap_backward
	scenario copy/unaligned_4k
	scenario io_error/read
	scenario io_error/write
	scenario interrupt
	scenario mounted_destination
}
