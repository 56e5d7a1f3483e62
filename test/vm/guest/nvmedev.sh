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
