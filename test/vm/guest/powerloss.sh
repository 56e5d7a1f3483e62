# The power-loss boots (busybox sh), sourced by init when the host put
# /guest/powerloss.env in the initramfs: PHASE (the boot's number), MODE
# (blkcopy --mode), SRC_OFF, DST_OFF, LEN (the copy within namespace P).
#
# Each boot runs the same command: a copy within P with its --state file
# on an ext4 file system on namespace S. The host kills QEMU (no shutdown,
# no sync: a power cut as far as the guest can tell) while the copy runs,
# then boots again on the same images; the last boot lets the copy finish
# and the host compares the images. The guest only reports, on the serial
# console:
#
#	POWERLOSS FOUND N       the state file found at boot records N bytes done
#	POWERLOSS RECORDED N    the state file now records N bytes done
#	POWERLOSS EXIT RC       blkcopy's exit status (the copy finished)
#	POWERLOSS JSON {...}    its JSON result
#	POWERLOSS STATE-LEFT    the state file still exists after exit 0

# shellcheck source=test/vm/guest/lib.sh
. /guest/lib.sh
# shellcheck source=/dev/null # written by the host
. /guest/powerloss.env

powerloss() {
	i=0
	while [ $i -lt 100 ]; do
		P=$(nvme_dev $DISK_P) && S=$(nvme_dev $DISK_S) && break
		sleep 0.1
		i=$((i + 1))
	done
	if [ -z "$P" ] || [ -z "$S" ]; then
		echo "VMTEST FAIL powerloss: namespaces P and S did not appear"
		return
	fi
	mkdir -p /mnt/state
	# Mounting replays ext4's journal: the file system as the power cut
	# left it.
	if ! mount -t ext4 "$S" /mnt/state; then
		echo "VMTEST FAIL powerloss: mount -t ext4 $S /mnt/state failed"
		return
	fi
	st=/mnt/state/copy.state
	echo "POWERLOSS BOOT $PHASE"
	if [ -e $st ]; then
		echo "POWERLOSS FOUND $(json_field done <$st)"
	fi
	rm -f /tmp/rc
	(
		blkcopy "$P" "$P" --src-offset "$SRC_OFF" --dst-offset "$DST_OFF" --len "$LEN" \
			--mode "$MODE" --state $st --progress never --json >/tmp/out 2>/tmp/err
		echo $? >/tmp/rc
	) &
	last=
	while [ ! -e /tmp/rc ]; do
		# No file until the run's first checkpoint (or the record
		# of an earlier boot).
		d=
		[ -f $st ] && d=$(json_field done <$st 2>/dev/null)
		if [ -n "$d" ] && [ "$d" != "$last" ]; then
			echo "POWERLOSS RECORDED $d"
			last=$d
		fi
		sleep 0.1
	done
	sleep 0.1 # the subshell's write of /tmp/rc
	cat /tmp/err
	echo "POWERLOSS JSON $(tr -d '\n' </tmp/out)"
	[ -e $st ] && echo "POWERLOSS STATE-LEFT"
	echo "POWERLOSS EXIT $(cat /tmp/rc)"
	umount /mnt/state
}
