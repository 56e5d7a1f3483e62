#!/bin/sh
# Rebuilds the captured sysfs trees the tests read. Layout as on a real
# Linux 6.x /sys: devices live under /sys/devices; /sys/block, /sys/class/block
# and /sys/dev/block hold relative symlinks to them; a partition is a
# subdirectory of its disk with "partition" and "start" and no queue/;
# dm-N keeps its members as symlinks in slaves/. size and start count
# 512-byte sectors whatever the logical block size. Git keeps no empty
# directories, so empty holders/ and slaves/ are left out.
#
# copy-offload/: a kernel with the block copy offload series.
#   nvme0n1 (4 KiB blocks, copy 8 MiB) with partitions p1, p2
#   nvme1n1 cannot copy (copy_max_hw_bytes=0)
#   nvme2n1 can copy but offload disabled (copy_max_bytes=0)
#   dm-0 "vg-data", linear over nvme0n1p2 and nvme1n1
#   loop0 unattached (size 0)
# mainline/: a kernel without copy offload (no copy_* attributes).
#   vda (virtio, 512/4096) with partition vda1; loop0 attached to a file.
set -eu
cd "$(dirname "$0")"
rm -rf copy-offload mainline

# dev ROOT DEVDIR NAME MAJ:MIN SECTORS RO
dev() {
	mkdir -p "$1/sys/$2"
	echo "$4" >"$1/sys/$2/dev"
	echo "$5" >"$1/sys/$2/size"
	echo "$6" >"$1/sys/$2/ro"
	ln -s "../../$2" "$1/sys/class/block/$3"
	ln -s "../../$2" "$1/sys/dev/block/$4"
}

# disk ROOT DEVDIR NAME MAJ:MIN SECTORS LBS PBS MIN OPT MAXKB HWKB SEGS DMA ROT [COPY HWCOPY]
disk() {
	r=$1 d=$2 n=$3
	dev "$r" "$d" "$n" "$4" "$5" 0
	ln -s "../$d" "$r/sys/block/$n"
	q=$r/sys/$d/queue
	mkdir -p "$q"
	echo "$6" >"$q/logical_block_size"
	echo "$6" >"$q/hw_sector_size"
	echo "$7" >"$q/physical_block_size"
	echo "$8" >"$q/minimum_io_size"
	echo "$9" >"$q/optimal_io_size"
	echo "${10}" >"$q/max_sectors_kb"
	echo "${11}" >"$q/max_hw_sectors_kb"
	echo "${12}" >"$q/max_segments"
	echo "${13}" >"$q/dma_alignment"
	echo "${14}" >"$q/rotational"
	if [ $# -ge 16 ]; then
		echo "${15}" >"$q/copy_max_bytes"
		echo "${16}" >"$q/copy_max_hw_bytes"
	fi
	printf 'MAJOR=%s\nMINOR=%s\nDEVNAME=%s\nDEVTYPE=disk\n' "${4%:*}" "${4#*:}" "$n" >"$r/sys/$d/uevent"
}

# part ROOT DISKDIR NAME MAJ:MIN NUMBER START SECTORS
part() {
	dev "$1" "$2/$3" "$3" "$4" "$7" 0
	echo "$5" >"$1/sys/$2/$3/partition"
	echo "$6" >"$1/sys/$2/$3/start"
	printf 'MAJOR=%s\nMINOR=%s\nDEVNAME=%s\nDEVTYPE=partition\nPARTN=%s\n' "${4%:*}" "${4#*:}" "$3" "$5" >"$1/sys/$2/$3/uevent"
}

skel() { mkdir -p "$1/sys/block" "$1/sys/class/block" "$1/sys/dev/block" "$1/sys/devices"; }

r=copy-offload
skel $r
nvme=devices/pci0000:00/0000:00:04.0/nvme
disk $r $nvme/nvme0/nvme0n1 nvme0n1 259:0 2097152 4096 4096 4096 0 128 128 33 3 0 8388608 8388608
part $r $nvme/nvme0/nvme0n1 nvme0n1p1 259:1 1 2048 262144
part $r $nvme/nvme0/nvme0n1 nvme0n1p2 259:2 2 264192 1832960
disk $r $nvme/nvme1/nvme1n1 nvme1n1 259:3 4194304 512 512 512 0 128 128 33 3 0 0 0
disk $r $nvme/nvme2/nvme2n1 nvme2n1 259:4 4194304 512 512 512 131072 256 256 127 3 0 0 4194304
disk $r devices/virtual/block/dm-0 dm-0 253:0 6021120 4096 4096 4096 0 128 128 33 3 0 0 0
mkdir -p $r/sys/devices/virtual/block/dm-0/slaves $r/sys/devices/virtual/block/dm-0/dm
echo vg-data >$r/sys/devices/virtual/block/dm-0/dm/name
ln -s ../../../../pci0000:00/0000:00:04.0/nvme/nvme0/nvme0n1/nvme0n1p2 $r/sys/devices/virtual/block/dm-0/slaves/nvme0n1p2
ln -s ../../../../pci0000:00/0000:00:04.0/nvme/nvme1/nvme1n1 $r/sys/devices/virtual/block/dm-0/slaves/nvme1n1
disk $r devices/virtual/block/loop0 loop0 7:0 0 512 512 512 0 1280 1280 128 511 1 0 0

r=mainline
skel $r
disk $r devices/pci0000:00/0000:00:02.0/virtio1/block/vda vda 254:0 536870912 512 4096 4096 0 4096 2147483647 254 511 1
part $r devices/pci0000:00/0000:00:02.0/virtio1/block/vda vda1 254:1 1 2048 536866816
disk $r devices/virtual/block/loop0 loop0 7:0 32768 512 512 512 0 1280 1280 128 511 1
mkdir -p $r/sys/devices/virtual/block/loop0/loop
echo /var/tmp/disk.img >$r/sys/devices/virtual/block/loop0/loop/backing_file
