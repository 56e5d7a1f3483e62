#!/bin/busybox sh
# PID 1 of the SCSI EXTENDED COPY benchmark's VM (go run ./bench --xcopy):
# load the modules, set up the Linux SCSI target (LIO) through configfs
# and export its LUs to this guest by tcm_loop and by iSCSI over the
# loopback interface (test/vm/guest/scsi.sh's helpers), then for each
# case copy SIZE bytes with every tool in turn, round after round, and report each copy on the console:
#
#   BENCH INFO key=value ...
#   BENCH COPY case=C tool=T round=R rc=N sum=1|0 secs=... rd_sectors=... (vmhelper time)
#   BENCH JSON C T R {...}     blkcopy's --json
#   BENCH ERR C T R message    a tool's stderr when it failed
#   BENCH FAIL message
#   BENCH DONE
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin:/usr/sbin
export LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /tmp
while read -r ko args; do
	# shellcheck disable=SC2086
	insmod "/modules/$ko" $args || echo "BENCH FAIL insmod $ko $args"
done </modules/order

# shellcheck source=/dev/null # written by the host: SIZE, RUNS, WARMUP,
# TOOLS, SRC_MD5, DISK_L, DISK_M ("serial nsid")
. /guest/env
MiB=1048576
# shellcheck source=test/vm/guest/scsi.sh
. /guest/scsi.sh

# shellcheck source=test/vm/guest/nvmedev.sh
. /guest/nvmedev.sh

i=0
# shellcheck disable=SC2086
while ! { L=$(nvme_dev $DISK_L) && M=$(nvme_dev $DISK_M); } && [ $i -lt 200 ]; do
	sleep 0.1
	i=$((i + 1))
done
mount -t configfs none /sys/kernel/config
mkdir -p "$TPG" && echo "$NEXUS_WWN" >"$TPG/nexus" || echo "BENCH FAIL tcm_loop nexus"
dd if=/dev/zero of=/tmp/lu2.img bs=1M count=0 seek=$((3 * SIZE / MiB)) status=none
lio_backstore iblock_0 lu0 "udev_path=$L" 5ca1ab1e0000 || echo "BENCH FAIL iblock over $L"
lio_backstore iblock_1 lu1 "udev_path=$M" 5ca1ab1e0001 || echo "BENCH FAIL iblock over $M"
lio_backstore fileio_2 lu2 "fd_dev_name=/tmp/lu2.img,fd_dev_size=$((3 * SIZE))" 5ca1ab1e0002 || echo "BENCH FAIL fileio"
lio_lun 0 iblock_0 lu0 && lio_lun 1 iblock_1 lu1 && lio_lun 2 fileio_2 lu2 || echo "BENCH FAIL LUN links"
wait_luns S0:0 S1:1 S2:2 || echo "BENCH FAIL the tcm_loop LUNs did not appear: $(ls /sys/block | tr '\n' ' ')"
# The two iblock LUs again, as LUNs 10 and 11 of an iSCSI target on the
# loopback interface.
iscsi_lus || echo "BENCH FAIL $ISCSI_ERR"
echo "BENCH INFO kernel=$(uname -r) iblock=$S0,$S1 fileio=$S2 iscsi=$I0,$I1 sg=$(ls /sys/class/scsi_generic 2>&1 | tr '\n' ,) dev_sg=$(ls /dev/sg* 2>&1 | tr '\n' ,)"
blkcopy limits "$S0" | sed 's/^/limits: /'
# The fileio LU's source: the same bytes as the iblock LU's.
blkcopy "$S0" "$S2" --len "$SIZE" --mode onload --progress never --quiet || echo "BENCH FAIL filling $S2"

# The cases: name, source, destination, destination offset (the source
# range is always [0, SIZE)), and the disks that zero and check the source
# and destination LUs: for the iSCSI cases their tcm_loop disks, so that
# preparing and checking a copy does not cost two trips over iSCSI (all
# of it O_DIRECT: no page cache to disagree).
CASES="iblock_same:$S0:$S0:$SIZE:$S0:$S0 iblock_across:$S0:$S1:0:$S0:$S1 fileio_same:$S2:$S2:$SIZE:$S2:$S2
iscsi_same:$I0:$I0:$SIZE:$S0:$S0 iscsi_across:$I0:$I1:0:$S0:$S1"

# sg_of DEV prints the sg node of an sd disk (sg_xcopy and ddpt address
# LUs by their SCSI generic nodes).
sg_of() {
	for g in /sys/block/${1##*/}/device/scsi_generic/sg*; do
		[ -e "$g" ] && echo "/dev/${g##*/}" && return 0
	done
	echo "$1"
}

copy_once() {
	c=$1 tool=$2 round=$3 src=$4 dst=$5 doff=$6 dchk=$7
	n=$((SIZE / 512))
	sgsrc=$(sg_of "$src") sgdst=$(sg_of "$dst")
	case $tool in
	blkcopy) set -- blkcopy "$src" "$dst" --src-offset 0 --dst-offset "$doff" --len "$SIZE" --json --progress never ;;
	onload) set -- blkcopy "$src" "$dst" --src-offset 0 --dst-offset "$doff" --len "$SIZE" --json --progress never --mode onload ;;
	dd) set -- dd if="$src" of="$dst" bs=4M count=$((SIZE / (4 * MiB))) seek=$((doff / (4 * MiB))) iflag=direct oflag=direct conv=fsync status=none ;;
	# Both sg3_utils tools with BPT blocks per command (their default is
	# 128), the command sent to the destination as blkcopy does.
	sg_xcopy) set -- sg_xcopy if="$sgsrc" of="$sgdst" bs=512 bpt=$BPT count=$n skip=0 seek=$((doff / 512)) ;;
	ddpt) set -- ddpt if="$sgsrc" of="$sgdst" bs=512 bpt=$BPT count=$n skip=0 seek=$((doff / 512)) oflag=xcopy ;;
	esac
	vmhelper zero "$dchk" "$doff" "$SIZE" || echo "BENCH FAIL zero $dchk $doff+$SIZE"
	rd0=$(awk '{print $3}' "/sys/block/${dst##*/}/stat")
	vmhelper time -o /tmp/m -stat "${src##*/}" -- "$@" >/tmp/out 2>/tmp/err
	rc=$?
	rd1=$(awk '{print $3}' "/sys/block/${dst##*/}/stat")
	ok=0
	[ "$(vmhelper sum "$dchk" "$doff" "$SIZE")" = "$SRC_MD5" ] && ok=1
	dst_rd=0
	[ "$src" != "$dst" ] && dst_rd=$((rd1 - rd0))
	echo "BENCH COPY case=$c tool=$tool round=$round rc=$rc sum=$ok dst_rd_sectors=$dst_rd $(cat /tmp/m 2>/dev/null)"
	case $tool in blkcopy | onload) echo "BENCH JSON $c $tool $round $(tr -d '\n' </tmp/out)" ;; esac
	[ "$rc" = 0 ] && [ $ok = 1 ] || echo "BENCH ERR $c $tool $round $(head -c 600 /tmp/err | tr '\n' ' ')"
}

round=0
while [ $round -lt $((WARMUP + RUNS)) ]; do
	for cs in $CASES; do
		IFS=: read -r c src dst doff schk dchk <<EOC
$cs
EOC
		for tool in $TOOLS; do
			copy_once "$c" "$tool" "$round" "$src" "$dst" "$doff" "$dchk"
		done
		[ "$(vmhelper sum "$schk" 0 "$SIZE")" = "$SRC_MD5" ] || echo "BENCH FAIL $c round $round: the source range changed"
	done
	round=$((round + 1))
done
echo "BENCH DONE"
sync
reboot -f
