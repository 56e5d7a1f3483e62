# nvmet.sh: export an NVMe namespace over NVMe/TCP on the guest's loopback
# interface and connect to it, so a copy runs against a namespace at the
# far end of a link (the kernel's NVMe target, nvmet-tcp, and its host,
# nvme-tcp). Sourced by the VM rig's fabric scenarios (scenarios.sh) and
# the offload benchmark's guest (bench/guest/offload.sh); needs a kernel
# with both built in (test/vm/seed-tcp.sh).
#
# On the seed kernel the target passes a Copy command it receives to
# blkdev_copy_offload on the backing namespace (QEMU's NVMe, which copies),
# and advertises Copy with MSSRL 65535, MCL 2^32-1 and MSRC 255 of its own:
# the initiator's copy_max_bytes is then 65535 blocks.

NVMET_CFG=/sys/kernel/config/nvmet

# nvmet_tcp_export DEV SERIAL PORT: export block device DEV as namespace 1
# of subsystem nqn.2026-12.io.blkcopy:SERIAL (controller serial SERIAL) on
# 127.0.0.1:PORT, connect to it, and print the new /dev/nvmeXn1.
nvmet_tcp_export() {
	dev=$1 serial=$2 port=$3
	nqn=nqn.2026-12.io.blkcopy:$serial
	grep -q ' /sys/kernel/config ' /proc/mounts ||
		mount -t configfs none /sys/kernel/config || return 1
	ifconfig lo 127.0.0.1 up || return 1
	s=$NVMET_CFG/subsystems/$nqn
	mkdir "$s" &&
		echo 1 >"$s/attr_allow_any_host" &&
		echo "$serial" >"$s/attr_serial" &&
		mkdir "$s/namespaces/1" &&
		printf %s "$dev" >"$s/namespaces/1/device_path" &&
		echo 1 >"$s/namespaces/1/enable" || return 1
	p=$NVMET_CFG/ports/$port
	mkdir "$p" &&
		echo tcp >"$p/addr_trtype" &&
		echo ipv4 >"$p/addr_adrfam" &&
		echo 127.0.0.1 >"$p/addr_traddr" &&
		echo "$port" >"$p/addr_trsvcid" &&
		ln -s "$s" "$p/subsystems/$nqn" || return 1
	echo "transport=tcp,traddr=127.0.0.1,trsvcid=$port,nqn=$nqn" >/dev/nvme-fabrics || return 1
	wait_nvme_dev "$serial" 1
}
