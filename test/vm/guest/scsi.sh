# SCSI EXTENDED COPY scenarios (busybox sh), sourced by scenarios.sh: the
# Linux SCSI target (LIO) set up through configfs, exported to this same
# guest by tcm_loop, so the guest's sd disks are LIO LUs whose copy
# manager takes EXTENDED COPY. Backstores:
#   LU 0  iblock over NVMe namespace L (128 MiB), unit serial: the main LU
#   LU 1  iblock over NVMe namespace M (128 MiB), unit serial
#   LU 2  fileio over /tmp/lu2.img (96 MiB), unit serial
#   LU 3  fileio over /tmp/lu3.img (32 MiB), no unit serial: no NAA
#         designator, so EXTENDED COPY cannot name it (onload)
#   LU 4  iblock over the throttled NVMe namespace T (8 MiB/s): a copy on
#         it lasts seconds, for the interrupt
#   LU 5  fileio over /tmp/lu5.img (32 MiB), unit serial, exported by a
#         second tcm_loop target (its own SCSI host and I_T nexus): the
#         copy manager of one nexus does not reach the LUs of the other
# Run after the NVMe scenarios: LIO holds its iblock namespaces open.

CFG=/sys/kernel/config/target
LOOP_WWN=naa.5001405000000a01
NEXUS_WWN=naa.5001405000000b01
TPG=$CFG/loopback/$LOOP_WWN/tpgt_1
TPG2=$CFG/loopback/naa.5001405000000a02/tpgt_1
SCSI_CMDS=0 # EXTENDED COPY commands blkcopy reported (offload_requests)
SCSI_OK=0   # the target came up

# lio_backstore HBA NAME CONTROL SERIAL: a backstore; SERIAL "" = none.
lio_backstore() {
	d=$CFG/core/$1/$2
	mkdir -p "$d" || return 1
	echo "$3" >"$d/control" || return 1
	[ -n "$4" ] && { echo "$4" >"$d/wwn/vpd_unit_serial" || return 1; }
	echo 1 >"$d/enable" || return 1
	echo 1 >"$d/attrib/emulate_3pc" || return 1
}

# lio_lun N HBA NAME [TPG]: export a backstore as LUN N of the tcm_loop
# target (the first one unless TPG).
lio_lun() {
	tpg=${4:-$TPG}
	mkdir -p "$tpg/lun/lun_$1" && ln -s "$CFG/core/$2/$3" "$tpg/lun/lun_$1/$3"
}

# sd_of_lun N prints /dev/sdX for LUN N; LUN numbers are unique among all
# the guest's targets.
sd_of_lun() {
	for d in /sys/block/sd*; do
		[ -e "$d/device" ] || continue
		hctl=$(basename "$(readlink "$d/device")")
		[ "${hctl##*:}" = "$1" ] && echo "/dev/${d##*/}" && return 0
	done
	return 1
}

# wait_luns VAR:LUN...: set each VAR to the sd disk of its LUN, waiting
# up to 20 s for the SCSI scan to bring them; false if one never came.
wait_luns() {
	i=0
	while [ $i -lt 200 ]; do
		ok=1
		for vl in "$@"; do
			d=$(sd_of_lun "${vl#*:}") || {
				ok=0
				break
			}
			eval "${vl%%:*}=\$d"
		done
		if [ $ok = 1 ]; then
			mdev -s
			return 0
		fi
		sleep 0.1
		i=$((i + 1))
	done
	return 1
}

# The same LIO LUs can also be reached over iSCSI (iscsi_target_mod) on
# the guest's loopback interface, logged in by open-iscsi's iscsistart:
# the transport EXTENDED COPY is for, where every byte a host copies
# crosses the link twice and an offloaded copy sends only commands.
ISCSI_IQN=iqn.2003-01.org.linux-iscsi.blkcopy:lio
ISCSI_TPG=$CFG/iscsi/$ISCSI_IQN/tpgt_1

# lio_iscsi_target: the iSCSI target's portal on 127.0.0.1:3260, open to
# any initiator (no ACLs, no authentication); export LUs with
# lio_lun N HBA NAME "$ISCSI_TPG", then iscsi_login.
lio_iscsi_target() {
	ifconfig lo 127.0.0.1 up || return 1
	mkdir -p "$ISCSI_TPG/np/127.0.0.1:3260" || return 1
	echo 0 >"$ISCSI_TPG/attrib/authentication" &&
		echo 1 >"$ISCSI_TPG/attrib/generate_node_acls" &&
		echo 1 >"$ISCSI_TPG/attrib/cache_dynamic_acls" &&
		echo 0 >"$ISCSI_TPG/attrib/demo_mode_write_protect"
}

# iscsi_lus: LUs 0 and 1 (iblock_0/lu0, iblock_1/lu1) again as LUNs 10 and
# 11 of the iSCSI target, logged in; sets I0 and I1 to their sd disks, or
# ISCSI_ERR to why not (run it in this shell, not in $(...): it sets them).
iscsi_lus() {
	{ lio_iscsi_target && lio_lun 10 iblock_0 lu0 "$ISCSI_TPG" && lio_lun 11 iblock_1 lu1 "$ISCSI_TPG" &&
		iscsi_login >/tmp/iscsi.log 2>&1; } || {
		ISCSI_ERR="iSCSI target on 127.0.0.1 and login: $(tr '\n' ' ' </tmp/iscsi.log 2>/dev/null)"
		return 1
	}
	wait_luns I0:10 I1:11 || {
		ISCSI_ERR="the iSCSI LUNs did not appear as sd disks: $(ls /sys/block | tr '\n' ' ')"
		return 1
	}
}

# iscsi_login: enable the target's portal group and log in to it; its LUs
# appear as sd disks of a new SCSI host.
iscsi_login() {
	echo 1 >"$ISCSI_TPG/enable" || return 1
	LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu \
		/usr/sbin/iscsistart -i iqn.2003-01.org.linux-iscsi.blkcopy:initiator -t "$ISCSI_IQN" -g 1 -a 127.0.0.1 -p 3260
}

scenario_scsi_setup() {
	[ -d $CFG ] || mount -t configfs none /sys/kernel/config 2>/dev/null
	if [ ! -d $CFG ]; then
		if [ "$KERNEL_KIND" = debian ]; then
			fail "no LIO in configfs ($CFG): the target modules did not load"
		else
			echo "note: this kernel has no LIO (no $CFG); the SCSI EXTENDED COPY scenarios are left out"
		fi
		return
	fi
	# shellcheck disable=SC2086 # DISK_X is "serial nsid"
	L=$(nvme_dev $DISK_L) && M=$(nvme_dev $DISK_M) || {
		fail "NVMe namespaces L and M for LIO not found"
		return
	}
	# The target and its I_T nexus first, then backstores, then LUNs.
	mkdir -p "$TPG" && echo "$NEXUS_WWN" >"$TPG/nexus" || fail "tcm_loop target and nexus"
	dd if=/dev/zero of=/tmp/lu2.img bs=1M count=0 seek=96 status=none
	dd if=/dev/zero of=/tmp/lu3.img bs=1M count=0 seek=32 status=none
	lio_backstore iblock_0 lu0 "udev_path=$L" 5ca1ab1e0000 || fail "iblock backstore over $L"
	lio_backstore iblock_1 lu1 "udev_path=$M" 5ca1ab1e0001 || fail "iblock backstore over $M"
	lio_backstore fileio_2 lu2 "fd_dev_name=/tmp/lu2.img,fd_dev_size=$((96 * MiB))" 5ca1ab1e0002 || fail "fileio backstore"
	lio_backstore fileio_3 lu3 "fd_dev_name=/tmp/lu3.img,fd_dev_size=$((32 * MiB))" "" || fail "fileio backstore without serial"
	lio_backstore iblock_4 lu4 "udev_path=$T" 5ca1ab1e0004 || fail "iblock backstore over $T"
	lio_lun 0 iblock_0 lu0 && lio_lun 1 iblock_1 lu1 && lio_lun 2 fileio_2 lu2 &&
		lio_lun 3 fileio_3 lu3 && lio_lun 4 iblock_4 lu4 || fail "LUN links"
	# A second target with its own nexus; its LUN number (5) is unique
	# among both, so sd_of_lun finds it.
	dd if=/dev/zero of=/tmp/lu5.img bs=1M count=0 seek=32 status=none
	mkdir -p "$TPG2" && echo naa.5001405000000b02 >"$TPG2/nexus" || fail "second tcm_loop target"
	lio_backstore fileio_5 lu5 "fd_dev_name=/tmp/lu5.img,fd_dev_size=$((32 * MiB))" 5ca1ab1e0005 || fail "fileio backstore of the second target"
	lio_lun 5 fileio_5 lu5 "$TPG2" || fail "LUN link of the second target"
	wait_luns S0:0 S1:1 S2:2 S3:3 S4:4 S5:5 || {
		fail "the tcm_loop LUNs did not appear as sd disks: $(ls /sys/block)"
		return
	}
	echo "LIO LUs: iblock $S0 ($L) $S1 ($M), fileio $S2, fileio without serial $S3, throttled iblock $S4 ($T), fileio behind another nexus $S5"
	SCSI_OK=1
}

scsi() { [ "$SCSI_OK" = 1 ]; }

count_scsi_cmds() { # count_scsi_cmds JSON
	if [ "$(echo "$1" | json_field offload_path)" = scsi-xcopy ]; then
		SCSI_CMDS=$((SCSI_CMDS + $(echo "$1" | json_field offload_requests)))
	fi
}

# scsi_copy SRC SOFF DST DOFF LEN OFFLOAD [flags]: copy_check, and where
# OFFLOAD is "all" (every byte) or a byte count, by the scsi-xcopy path.
scsi_copy() {
	want_off=$6
	[ "$want_off" = all ] && want_off=$5
	a1=$1 a2=$2 a3=$3 a4=$4 a5=$5
	shift 6
	copy_check "$a1" "$a2" "$a3" "$a4" "$a5" "$want_off" "$@"
	count_scsi_cmds "$out"
	case $want_off in
	[1-9]*) expect_eq "offload_path" scsi-xcopy "$(echo "$out" | json_field offload_path)" ;;
	esac
}

scenario_scsi_limits() {
	scsi || return 0
	for dev in "$S0" "$S2"; do
		out=$(blkcopy limits "$dev" --json 2>/tmp/err) || fail "blkcopy limits $dev: $(cat /tmp/err)"
		echo "$out"
		expect_eq "$dev offload_path" scsi-xcopy "$(echo "$out" | json_field offload_path)"
		expect_eq "$dev third_party_copy" true "$(echo "$out" | json_field third_party_copy)"
		case $(echo "$out" | json_field designator) in
		6001405*) ;;
		*) fail "$dev designator is not LIO's NAA 6: $out" ;;
		esac
		expect_eq "$dev max_segment_descriptors" 1 "$(echo "$out" | json_field max_segment_descriptors)"
		expect_eq "$dev max_cscd_descriptors" 2 "$(echo "$out" | json_field max_cscd_descriptors)"
		table=$(blkcopy limits "$dev" 2>&1)
		echo "$table"
		case $table in
		*"3PC yes"*scsi-xcopy*) ;;
		*) fail "limits table for $dev does not show 3PC and the scsi-xcopy path: $table" ;;
		esac
	done
	out=$(blkcopy limits "$S3" --json 2>/tmp/err) || fail "blkcopy limits $S3: $(cat /tmp/err)"
	echo "$out"
	expect_eq "$S3 offload_path" "" "$(echo "$out" | json_field offload_path)"
	case $(echo "$out" | json_field path_reason) in
	*"no NAA designator"*) ;;
	*) fail "path_reason for $S3 does not say it has no NAA designator: $out" ;;
	esac
}

scenario_scsi_copy_same_lu() {
	scsi || return 0
	scsi_copy "$S0" $((4 * MiB)) "$S0" $((40 * MiB)) $((8 * MiB)) all
}

scenario_scsi_copy_same_lu_fileio() {
	scsi || return 0
	scsi_copy "$S2" $((4 * MiB)) "$S2" $((40 * MiB)) $((8 * MiB)) all
}

scenario_scsi_copy_across_lus() {
	scsi || return 0
	scsi_copy "$S0" $((70 * MiB)) "$S1" $((8 * MiB)) $((40 * MiB)) all
}

scenario_scsi_copy_across_backstores() {
	scsi || return 0
	scsi_copy "$S2" $((70 * MiB)) "$S1" $((60 * MiB)) $((8 * MiB)) all
	scsi_copy "$S1" $((100 * MiB)) "$S2" $((50 * MiB)) $((8 * MiB)) all
}

# Overlap both ways, within an iblock LU and a fileio LU: the result must
# be a memmove; a command never overlaps itself (LIO copies forward in
# pieces of 512 KiB on iblock, 8 MiB on fileio).
scenario_scsi_copy_overlap() {
	scsi || return 0
	scsi_copy "$S0" $((90 * MiB)) "$S0" $((90 * MiB + 1536 * KiB)) $((6 * MiB)) all
	scsi_copy "$S0" $((100 * MiB + 1536 * KiB)) "$S0" $((100 * MiB)) $((6 * MiB)) all
	scsi_copy "$S2" $((4 * MiB)) "$S2" $((4 * MiB + 3 * MiB)) $((12 * MiB)) all
	scsi_copy "$S2" $((30 * MiB + 3 * MiB)) "$S2" $((30 * MiB)) $((12 * MiB)) all
}

# Byte offsets that agree modulo 512: the head and tail through the host,
# the whole blocks between by EXTENDED COPY.
scenario_scsi_copy_unaligned() {
	scsi || return 0
	soff=$((110 * MiB + 700)) doff=$((20 * MiB + 700)) len=$((3 * MiB + 100))
	head=$((512 - 700 % 512))
	scsi_copy "$S0" "$soff" "$S1" "$doff" "$len" $(((len - head) / 512 * 512))
	copy_check "$S0" $((110 * MiB + 3)) "$S1" $((20 * MiB + 5)) $((MiB)) none
}

# Partitions: LBAs translated by the partition start, within one LU.
scenario_scsi_copy_partitions() {
	scsi || return 0
	printf 'o\nn\np\n1\n2048\n34815\nn\np\n2\n34816\n67583\nw\n' | fdisk -u "$S1" >/tmp/fdisk.log 2>&1
	blockdev --rereadpt "$S1" 2>/dev/null
	mdev -s
	if [ ! -b "${S1}1" ] || [ ! -b "${S1}2" ]; then
		fail "no ${S1}1, ${S1}2 after fdisk: $(cat /tmp/fdisk.log)"
		return
	fi
	scsi_copy "${S1}1" $((MiB)) "${S1}2" $((2 * MiB)) $((12 * MiB)) all
	# Whole disk against its own partition: overlap judged on the LU.
	scsi_copy "$S1" $((MiB + 4 * MiB)) "${S1}1" $((4 * MiB + 512 * KiB)) $((4 * MiB)) all
}

# An LU without an NAA designator cannot be named: onload, saying why,
# within it and between it and a LU that has one; --mode offload exits 3.
scenario_scsi_copy_no_designator() {
	scsi || return 0
	copy_check "$S3" $((MiB)) "$S3" $((16 * MiB)) $((4 * MiB)) none
	case $(echo "$out" | json_field fallback_reason) in
	*"no NAA designator"*) ;;
	*) fail "fallback_reason does not say $S3 has no NAA designator: $out" ;;
	esac
	copy_check "$S0" $((MiB)) "$S3" $((20 * MiB)) $((4 * MiB)) none
	blkcopy "$S3" "$S3" --src-offset 0 --dst-offset $((8 * MiB)) --len "$MiB" --mode offload --progress never 2>/tmp/err
	expect_eq "--mode offload on an LU without designator: exit status" 3 "$?"
}

# LUs behind two nexuses: both announce 3PC and have a designator, so
# blkcopy tries; the copy manager of the destination's nexus cannot reach
# the source LU and aborts the first command (COPY ABORTED, copy target
# device not reachable): the copy falls back to onload at that byte and
# says why.
scenario_scsi_copy_unreachable() {
	scsi || return 0
	copy_check "$S0" $((20 * MiB)) "$S5" $((4 * MiB)) $((4 * MiB)) none
	count_scsi_cmds "$out"
	case $(echo "$out" | json_field offload_disabled_reason) in
	*"not reachable"*) ;;
	*) fail "offload_disabled_reason does not say the copy target is not reachable: $out" ;;
	esac
	blkcopy "$S0" "$S5" --src-offset 0 --dst-offset $((8 * MiB)) --len "$MiB" --mode offload --progress never 2>/tmp/err
	expect_eq "--mode offload between LUs the copy manager cannot reach: exit status" 3 "$?"
	cat /tmp/err
}

scenario_scsi_offload_mode() {
	scsi || return 0
	guard_set "$S0" $((64 * MiB)) $((8 * MiB))
	out=$(blkcopy "$S0" "$S1" --src-offset $((4 * MiB)) --dst-offset $((64 * MiB)) --len $((8 * MiB)) --mode offload --offload-path scsi-xcopy --json --progress never 2>/tmp/err)
	rc=$?
	echo "exit $rc: $out $(cat /tmp/err)"
	count_scsi_cmds "$out"
	expect_eq "exit status" 0 "$rc"
	expect_eq "offloaded_bytes" $((8 * MiB)) "$(echo "$out" | json_field offloaded_bytes)"
}

# A range past the end of the destination LU is refused before any write.
scenario_scsi_past_end() {
	scsi || return 0
	size=$(blockdev --getsize64 "$S1")
	guard_set "$S1" $((size - MiB)) "$MiB"
	before=$(sum "$S1" $((size - MiB - GUARD)) $((MiB + GUARD)))
	blkcopy "$S0" "$S1" --src-offset 0 --dst-offset $((size - MiB)) --len $((2 * MiB)) --progress never 2>/tmp/err
	rc=$?
	cat /tmp/err
	expect_eq "exit status" 1 "$rc"
	grep -q "past its end" /tmp/err || fail "error does not say past its end: $(cat /tmp/err)"
	expect_eq "destination untouched" "$before" "$(sum "$S1" $((size - MiB - GUARD)) $((MiB + GUARD)))"
}

# The initiator does not move the data: its own reads of the sd disk
# (sectors read, /sys/block/sdX/stat) stay under the canary's reads
# (2 MiB) plus 10% of the bytes copied. The source is written from a file so
# nothing else reads it.
scenario_scsi_host_reads() {
	scsi || return 0
	scsi_host_reads "$S0 $S0 $((4 * MiB)) $((64 * MiB))" "$S0 $S1 $((4 * MiB)) $((72 * MiB))"
}

# scsi_host_reads "SRC DST SOFF DOFF"...: copy 32 MiB for each, offloaded
# in full, the initiator's reads at the canary, the destination right.
scsi_host_reads() {
	for pair in "$@"; do
		# shellcheck disable=SC2086
		set -- $pair
		src=$1 dst=$2 soff=$3 doff=$4 len=$((32 * MiB))
		random_fill "$src" "$soff" "$len"
		want=$(sum "$src" "$soff" "$len")
		r0=$(awk '{print $3}' "/sys/block/${src##*/}/stat")
		w0=$(awk '{print $3}' "/sys/block/${dst##*/}/stat")
		out=$(blkcopy "$src" "$dst" --src-offset "$soff" --dst-offset "$doff" --len "$len" --json --progress never 2>/tmp/err)
		rc=$?
		r1=$(awk '{print $3}' "/sys/block/${src##*/}/stat")
		w1=$(awk '{print $3}' "/sys/block/${dst##*/}/stat")
		echo "$out $(cat /tmp/err)"
		count_scsi_cmds "$out"
		expect_eq "exit status" 0 "$rc"
		expect_eq "offloaded_bytes" "$len" "$(echo "$out" | json_field offloaded_bytes)"
		expect_eq "offload_path" scsi-xcopy "$(echo "$out" | json_field offload_path)"
		read_bytes=$(((r1 - r0) * 512))
		[ "$src" != "$dst" ] && read_bytes=$((read_bytes + (w1 - w0) * 512))
		echo "VMTEST INFO scsi_initiator_reads ${src##*/}->${dst##*/}: $read_bytes bytes read by the host while copying $len ($(echo "$out" | json_field offload_requests) EXTENDED COPY commands)"
		# The canary (CANARY_MAX, copypath.CanaryMax) costs twice itself in
		# reads: the source, to poison the destination with its complement,
		# and the destination read back.
		if [ "$read_bytes" -ge $((2 * CANARY_MAX + len / 10)) ]; then
			fail "the host read $read_bytes bytes of $src/$dst during an EXTENDED COPY of $len (want under the canary's $((2 * CANARY_MAX)) bytes + 10%)"
		fi
		expect_eq "destination checksum" "$want" "$(sum "$dst" "$doff" "$len")"
	done
}

# Over iSCSI, the transport EXTENDED COPY exists for: LUs 0 and 1 again,
# as LUNs 10 and 11 of an iSCSI target on the loopback interface, logged
# in by iscsistart. The command and its sense data now cross a network
# transport (iscsi_tcp), and a copy through the host would cross it twice;
# within one LU and across the two, every byte offloaded, the initiator's
# reads at the canary. Last: LU 0's tcm_loop disk does not see these
# writes in its page cache (every check here reads past it).
scenario_scsi_iscsi() {
	scsi || return 0
	if [ ! -x /usr/sbin/iscsistart ]; then
		echo "note: no iscsistart in the guest (the host lacks open-iscsi: test/vm/fetch.sh packages); the iSCSI scenario is left out"
		return
	fi
	iscsi_lus || {
		fail "$ISCSI_ERR"
		return
	}
	echo "iSCSI LUs: $I0 (LU 0), $I1 (LU 1), transport $(cat /sys/class/iscsi_session/session*/targetname 2>&1)"
	scsi_host_reads "$I0 $I0 $((4 * MiB)) $((64 * MiB))" "$I0 $I1 $((40 * MiB)) $((8 * MiB))"
}

# Page cache: the destination cached by a buffered read and the source
# dirtied by a buffered write, with the device held open; a buffered read
# after the copy sees the copied bytes.
scenario_scsi_page_cache() {
	scsi || return 0
	page_cache_check "$S2" $((20 * MiB)) $((30 * MiB)) $((4 * MiB)) $((4 * MiB))
	count_scsi_cmds "$out"
}

# expect_interrupted_by_xcopy: the interrupted copy's JSON (/tmp/out,
# from interrupt_check) names the scsi-xcopy path.
expect_interrupted_by_xcopy() {
	case $(cat /tmp/out) in
	*'"offload_path":"scsi-xcopy"'* | *'"offload_path": "scsi-xcopy"'*) ;;
	*) fail "the interrupted copy did not run by scsi-xcopy: $(cat /tmp/out)" ;;
	esac
}

# SIGTERM during an EXTENDED COPY on the throttled LU: exit 130, and the
# printed resume command finishes the copy. 24 MiB: after the 64 KiB
# canary two 8 MiB commands go out at once, and a command in flight is not
# taken back, so a 16 MiB copy was already whole when SIGTERM came; a third
# command leaves the copy something to stop before.
scenario_scsi_interrupt() {
	scsi || return 0
	interrupt_check "$S4" $((32 * MiB)) "$S4" $((2 * MiB)) $((24 * MiB))
	count_scsi_cmds "$(cat /tmp/out)"
	count_scsi_cmds "$out" # the resume's
	expect_interrupted_by_xcopy
}

# The same with --state: the same command run again resumes from the
# record, by EXTENDED COPY again.
scenario_scsi_interrupt_state() {
	scsi || return 0
	interrupt_check "$S4" $((32 * MiB)) "$S4" $((2 * MiB)) $((24 * MiB)) /tmp/scsi-interrupt.state
	count_scsi_cmds "$(cat /tmp/out)"
	count_scsi_cmds "$out" # the rerun's
	expect_interrupted_by_xcopy
}

run_scsi() {
	scenario scsi/setup
	scenario scsi/limits
	scenario scsi/copy/same_lu
	scenario scsi/copy/same_lu_fileio
	scenario scsi/copy/across_lus
	scenario scsi/copy/across_backstores
	scenario scsi/copy/overlap
	scenario scsi/copy/unaligned
	scenario scsi/copy/partitions
	scenario scsi/copy/no_designator
	scenario scsi/copy/unreachable
	scenario scsi/offload_mode
	scenario scsi/past_end
	scenario scsi/page_cache
	scenario scsi/host_reads
	scenario scsi/interrupt
	scenario scsi/interrupt_state
	scenario scsi/iscsi
	echo "VMTEST INFO scsi_commands=$SCSI_CMDS"
}
