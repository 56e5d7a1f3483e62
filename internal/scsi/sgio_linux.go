package scsi

import (
	"fmt"
	"os"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sgIOHdr is struct sg_io_hdr from <scsi/sg.h>, the argument of the SG_IO
// ioctl that block devices of the SCSI disk driver (and /dev/sg*) take.
// Pointers are uintptr: the kernel reads them as user addresses, and the
// buffers they point at are kept alive across the call by the caller.
type sgIOHdr struct {
	interfaceID    int32 // 'S'
	dxferDirection int32 // sgDxfer*
	cmdLen         uint8
	mxSbLen        uint8 // sense buffer size
	iovecCount     uint16
	dxferLen       uint32
	dxferp         uintptr // data buffer
	cmdp           uintptr // CDB
	sbp            uintptr // sense buffer
	timeout        uint32  // milliseconds
	flags          uint32
	packID         int32
	usrPtr         uintptr
	status         uint8 // SAM status byte (GOOD, CHECK CONDITION, ...)
	maskedStatus   uint8
	msgStatus      uint8
	sbLenWr        uint8 // sense bytes written
	hostStatus     uint16
	driverStatus   uint16
	resid          int32
	duration       uint32
	info           uint32
}

// The struct's size is part of nothing in the ioctl number (SG_IO is a
// plain 0x2285), so a drifted layout would not fail the ioctl: it would
// hand the kernel garbage. Fail the build instead (88 bytes on 64-bit
// Linux, 64 on 32-bit).
var _ [8*unsafe.Sizeof(uintptr(0)) + 24]byte = [unsafe.Sizeof(sgIOHdr{})]byte{}

const (
	ioctlSGIO = 0x2285 // SG_IO, <scsi/sg.h>

	sgDxferNone    = -1
	sgDxferToDev   = -2
	sgDxferFromDev = -3

	senseLen = 96 // SCSI_SENSE_BUFFERSIZE
)

// cmdTimeout bounds one command. LIO takes up to about 0.4 s for the
// largest segment on a file backstore under QEMU; arrays a few seconds.
// The SCSI midlayer's own default for sd is 30 s; a copy command moves
// more than a read, so give it twice that.
const cmdTimeout = 60 * time.Second

// direction of a command's data.
type direction int8

const (
	dirNone direction = iota
	dirIn             // device to host (INQUIRY, RECEIVE COPY RESULTS)
	dirOut            // host to device (EXTENDED COPY's parameter list)
)

// request is one SCSI command as blkcopy sends it.
type request struct {
	cdb  []byte
	dir  direction
	data []byte
}

// response is what came back: the SAM status, the transport's host and
// driver status, the sense data, and how many bytes of data the device
// did not transfer.
type response struct {
	status       uint8
	hostStatus   uint16
	driverStatus uint16
	sense        []byte
	resid        int
}

// ok reports whether the command completed with GOOD status and no
// transport trouble.
func (r response) ok() bool {
	return r.status == statusGood && r.hostStatus == 0 && r.driverStatus&^driverSense == 0
}

// execute sends req through f. A test seam: fakes answer with the sense
// data real targets give only in trouble.
var execute = sgIO

func sgIO(f *os.File, req *request) (response, error) {
	sense := make([]byte, senseLen)
	h := sgIOHdr{
		interfaceID: 'S',
		cmdLen:      uint8(len(req.cdb)),
		mxSbLen:     senseLen,
		cmdp:        uintptr(unsafe.Pointer(&req.cdb[0])),
		sbp:         uintptr(unsafe.Pointer(&sense[0])),
		timeout:     uint32(cmdTimeout / time.Millisecond),
	}
	switch req.dir {
	case dirNone:
		h.dxferDirection = sgDxferNone
	case dirIn:
		h.dxferDirection = sgDxferFromDev
	case dirOut:
		h.dxferDirection = sgDxferToDev
	}
	if len(req.data) > 0 {
		h.dxferp = uintptr(unsafe.Pointer(&req.data[0]))
		h.dxferLen = uint32(len(req.data))
	}
	var errno unix.Errno
	err := control(f, func(fd uintptr) {
		_, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, ioctlSGIO, uintptr(unsafe.Pointer(&h)))
	})
	// The header holds the only references the kernel uses while the
	// command runs.
	runtime.KeepAlive(req)
	runtime.KeepAlive(sense)
	switch {
	case err != nil:
		return response{}, err
	case errno != 0:
		return response{}, os.NewSyscallError("ioctl(SG_IO)", errno)
	}
	return response{
		status:       h.status,
		hostStatus:   h.hostStatus,
		driverStatus: h.driverStatus,
		sense:        sense[:min(int(h.sbLenWr), senseLen)],
		resid:        int(h.resid),
	}, nil
}

// control runs fn on f's descriptor without f.Fd(), which would switch the
// file to blocking mode and could let the descriptor be closed under a
// command in flight.
func control(f *os.File, fn func(fd uintptr)) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Control(fn)
}

// SAM status bytes (SAM-5, 5.3.1) and the driver status bit that says
// sense data came back (<scsi/sg.h> DRIVER_SENSE).
const (
	statusGood             = 0x00
	statusCheckCondition   = 0x02
	statusBusy             = 0x08
	statusReservationConfl = 0x18
	statusTaskSetFull      = 0x28
	statusACAActive        = 0x30
	statusTaskAborted      = 0x40
	driverSense            = 0x08
)

// statusWords says what a SAM status other than CHECK CONDITION means.
func statusWords(s uint8) string {
	switch s {
	case statusBusy:
		return "the device is busy"
	case statusReservationConfl:
		return "reservation conflict: another initiator holds a reservation on the device"
	case statusTaskSetFull:
		return "the device's command queue is full"
	case statusACAActive:
		return "ACA active"
	case statusTaskAborted:
		return "command aborted by the device"
	}
	return fmt.Sprintf("SCSI status %#02x", s)
}

// hostWords says what the SCSI midlayer's host status means
// (<scsi/scsi_status.h> DID_*): the command did not reach the device or
// did not come back from it.
func hostWords(h uint16) string {
	switch h {
	case 0x01:
		return "no connection to the device"
	case 0x02:
		return "bus busy"
	case 0x03:
		return "command timed out"
	case 0x04:
		return "bad target"
	case 0x05:
		return "command aborted"
	case 0x06:
		return "parity error"
	case 0x07:
		return "internal error in the host adapter"
	case 0x08:
		return "bus reset"
	case 0x0b:
		return "transport disrupted (retry)"
	case 0x0e:
		return "transport failfast"
	case 0x0f:
		return "target failure"
	case 0x10:
		return "nexus failure"
	case 0x11:
		return "allocation failure"
	case 0x12:
		return "medium error"
	}
	return fmt.Sprintf("transport error (host status %#x)", h)
}
