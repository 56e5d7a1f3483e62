package cmd

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/blkcopy/blkcopy/internal/scsi"
	"github.com/blkcopy/blkcopy/internal/sysfs"
)

// identifySCSI asks the SCSI LU at path about third-party copy. A test
// seam, like identifyNVMe.
var identifySCSI = identifySCSIReadOnly

// noLiveSCSI is why a captured sysfs tree has no SCSI facts.
const noLiveSCSI = "SCSI facts need the live device (--sysroot reads only sysfs)"

// identifySCSIReadOnly sends INQUIRY, READ CAPACITY and RECEIVE COPY
// RESULTS on path opened read-only and without O_EXCL: asking must not
// disturb a disk in use. The kernel passes these through SG_IO to a
// read-only descriptor for CAP_SYS_RAWIO (root).
func identifySCSIReadOnly(path string) (*scsi.Info, error) {
	f, err := os.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return scsi.Identify(f)
}

// scsiXCopyRow is what a SCSI LU says about EXTENDED COPY: INQUIRY's 3PC
// bit, its NAA designator (VPD page 83h) and its copy manager's operating
// parameters (RECEIVE COPY RESULTS, service action 03h).
type scsiXCopyRow struct {
	// Identified: the LU answered; otherwise Reason says why not and the
	// other fields are zero.
	Identified     bool   `json:"identified"`
	Reason         string `json:"reason"`
	Vendor         string `json:"vendor"`
	Product        string `json:"product"`
	ThirdPartyCopy bool   `json:"third_party_copy"`
	// Designator is the NAA designator in hex, "" when the LU has none
	// (it cannot be named in an EXTENDED COPY).
	Designator string `json:"designator"`
	BlockSize  int64  `json:"block_size"`
	// OperatingParameters: the copy manager reported its limits; when
	// not, ParamsReason says why (no 3PC, or the command failed).
	OperatingParameters   bool     `json:"operating_parameters"`
	ParamsReason          string   `json:"operating_parameters_reason"`
	MaxCSCDDescriptors    int      `json:"max_cscd_descriptors"`
	MaxSegmentDescriptors int      `json:"max_segment_descriptors"`
	MaxDescriptorListLen  uint32   `json:"max_descriptor_list_length"`
	MaxSegmentLength      uint32   `json:"max_segment_length"` // bytes; 0 = not limited
	DescriptorCodes       []string `json:"descriptor_codes"`   // implemented: "02h", "E4h", ...
}

func scsiXCopyOf(info *scsi.Info) *scsiXCopyRow {
	r := &scsiXCopyRow{Identified: true, Vendor: info.Vendor, Product: info.Product, ThirdPartyCopy: info.ThirdPartyCopy,
		BlockSize: info.BlockSize, DescriptorCodes: []string{}}
	if info.NAA != nil {
		r.Designator = info.NAA.String()
	}
	switch p := info.Params; {
	case p != nil:
		r.OperatingParameters = true
		r.MaxCSCDDescriptors, r.MaxSegmentDescriptors = p.MaxCSCDs, p.MaxSegments
		r.MaxDescriptorListLen, r.MaxSegmentLength = p.MaxListLen, p.MaxSegmentLen
		for _, c := range p.Descriptors {
			r.DescriptorCodes = append(r.DescriptorCodes, fmt.Sprintf("%02Xh", c))
		}
	case !info.ThirdPartyCopy:
		r.ParamsReason = "not asked: the LU does not announce third-party copy"
	case info.ParamsErr != nil:
		r.ParamsReason = info.ParamsErr.Error()
	}
	return r
}

// isSCSI says whether the SCSI path could serve d at all, by the test
// scsi.Path makes: an sd disk or a partition of one, not a stacked device.
func isSCSI(d *sysfs.Device) bool { return scsi.IsDisk(d.Disk) && len(d.Slaves) == 0 }

// chooseSCSIPath fills in the SCSI facts and the path of a copy within d,
// an sd disk or a partition of one. Only on the live system is it asked.
func (r *limitsRow) chooseSCSIPath(d *sysfs.Device, sys sysfs.Sys, live bool) {
	name := scsi.Path{}.Name()
	notNVMe := "nvme: not an NVMe namespace or a partition of one"
	if !live {
		r.SCSIXCopy = &scsiXCopyRow{Reason: noLiveSCSI, DescriptorCodes: []string{}}
		r.pathFromSysfs(d, notNVMe+"; "+name+": "+noLiveSCSI)
		return
	}
	info, err := identifySCSI(r.Path)
	if err != nil {
		r.SCSIXCopy = &scsiXCopyRow{Reason: err.Error(), DescriptorCodes: []string{}}
		var pe *fs.PathError
		if errors.As(err, &pe) && pe.Op == "open" {
			r.pathFromSysfs(d, notNVMe+"; "+name+": "+err.Error())
			return
		}
	} else {
		r.SCSIXCopy = scsiXCopyOf(info)
	}
	r.pathFromPaths(sys)
}

// scsiNote prints, below the table, what a SCSI LU says about EXTENDED
// COPY and why a copy within it takes its path.
func scsiNote(w io.Writer, r *limitsRow) {
	x := r.SCSIXCopy
	switch {
	case !x.Identified:
		fmt.Fprintf(w, "%s: SCSI disk; EXTENDED COPY support unknown: %s\n", r.Path, x.Reason)
	default:
		threePC, desig := "no", "no NAA designator"
		if x.ThirdPartyCopy {
			threePC = "yes"
		}
		if x.Designator != "" {
			desig = "NAA designator " + x.Designator
		}
		fmt.Fprintf(w, "%s: SCSI LU %q, %d-byte blocks: 3PC %s, %s\n", r.Path, strings.TrimSpace(x.Vendor+" "+x.Product), x.BlockSize, threePC, desig)
		if x.OperatingParameters {
			segLen := "not limited"
			if x.MaxSegmentLength > 0 {
				segLen = sysfs.FormatLimit(int64(x.MaxSegmentLength))
			}
			fmt.Fprintf(w, "  copy manager: %d CSCD descriptors, %d segment descriptors, lists up to %d bytes, segments up to %s (and 65535 blocks), descriptor codes %s\n",
				x.MaxCSCDDescriptors, x.MaxSegmentDescriptors, x.MaxDescriptorListLen, segLen, strings.Join(x.DescriptorCodes, " "))
		} else if x.ParamsReason != "" {
			fmt.Fprintf(w, "  copy manager: no operating parameters (%s)\n", x.ParamsReason)
		}
	}
	fmt.Fprintf(w, "  copy path: %s", pathCell(r))
	if r.PathReason != "" {
		fmt.Fprintf(w, " (%s)", r.PathReason)
	}
	fmt.Fprintln(w)
}
