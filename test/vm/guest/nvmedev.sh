# nvme_dev SERIAL NSID prints /dev/nvmeXnY: the kernel numbers controllers
# in probe order, so the host names namespaces by controller serial and
# namespace ID. Sourced by the VM rig's guest scripts (lib.sh) and by the
# benchmark's guests (bench/guest/*.sh), which the host gives a copy of it
# as /guest/nvmedev.sh.
# Multipath path devices (nvmeXcYnZ: hidden, no /dev node; a namespace
# of a fabrics controller is reached through its head, nvmeXnZ) are not
# namespaces to copy on.
nvme_dev() {
	for d in /sys/block/nvme*; do
		case ${d##*/} in nvme*c*n*) continue ;; esac
		[ -e "$d/device/serial" ] || continue
		[ "$(tr -d ' ' <"$d/device/serial")" = "$1" ] || continue
		[ "$(cat "$d/nsid")" = "$2" ] || continue
		echo "/dev/${d##*/}"
		return 0
	done
	return 1
}

# wait_nvme_dev SERIAL NSID: nvme_dev once the namespace has appeared and
# mdev made its node (the driver scans namespaces after probe, or after a
# fabrics connect, returns), for up to 20 s.
wait_nvme_dev() {
	i=0
	while [ $i -lt 200 ]; do
		mdev -s 2>/dev/null
		if d=$(nvme_dev "$1" "$2") && [ -b "$d" ]; then
			echo "$d"
			return 0
		fi
		sleep 0.1
		i=$((i + 1))
	done
	return 1
}
