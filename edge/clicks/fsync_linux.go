//go:build linux && (amd64 || arm64)

package clicks

import (
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// syncFile is f.Sync (fsync), done through Linux AIO (IOCB_CMD_FSYNC)
// with its completion signalled on an eventfd the runtime's poller waits
// on, so that the wait does not hold the runtime's P.
//
// A goroutine in a blocking system call keeps its P until sysmon takes it
// back, and sysmon, idle, looks every 10 ms and takes a P back only from a
// call it has seen running in two looks: an fsync of a few milliseconds
// keeps the P throughout. With GOMAXPROCS=1 (an edge given one core),
// every redirect waited behind the seal's batch file: go tool trace of the
// pinned analytics edge under wrk showed no other goroutine run during its
// fsyncs of 1-9 ms. The AIO fsync runs in a kernel worker while this
// goroutine is parked on the eventfd. Where AIO is unavailable (io_setup
// refused, a kernel before 4.18, a file system without it), f.Sync.
func syncFile(f *os.File) error { return fsyncer.sync(f) }

var fsyncer aioSyncer

// aioSyncer is the process's AIO context, one fsync at a time. It lives
// as long as the process.
type aioSyncer struct {
	mu    sync.Mutex
	once  sync.Once
	ctx   uintptr  // aio_context_t; 0: no AIO, f.Sync
	efd   *os.File // the eventfd, read through the poller
	efdFD int
}

// iocb is struct iocb (linux/aio_abi.h, little-endian layout).
type iocb struct {
	data     uint64
	key      uint32
	rwFlags  int32
	opcode   uint16
	reqprio  int16
	fildes   uint32
	buf      uint64
	nbytes   uint64
	offset   int64
	reserved uint64
	flags    uint32
	resfd    uint32
}

// ioEvent is struct io_event.
type ioEvent struct {
	data, obj uint64
	res, res2 int64
}

const (
	iocbCmdFsync  = 2
	iocbFlagResfd = 1 << 0
)

func (a *aioSyncer) setup() {
	var ctx uintptr
	if _, _, e := syscall.Syscall(syscall.SYS_IO_SETUP, 1, uintptr(unsafe.Pointer(&ctx)), 0); e != 0 {
		return
	}
	// EFD_NONBLOCK and EFD_CLOEXEC are O_NONBLOCK and O_CLOEXEC: a
	// non-blocking descriptor, which os.NewFile gives to the poller.
	fd, _, e := syscall.Syscall(syscall.SYS_EVENTFD2, 0, syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if e != 0 {
		_, _, _ = syscall.Syscall(syscall.SYS_IO_DESTROY, ctx, 0, 0)
		return
	}
	a.ctx, a.efdFD, a.efd = ctx, int(fd), os.NewFile(fd, "click journal aio eventfd")
}

func (a *aioSyncer) sync(f *os.File) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.once.Do(a.setup)
	if a.ctx == 0 {
		return f.Sync()
	}
	var res error
	fallback := true
	if rc, err := f.SyscallConn(); err == nil {
		// Control fails on a closed file: f.Sync says so as usual.
		_ = rc.Control(func(fd uintptr) { res, fallback = a.fsync(fd) })
	}
	if fallback {
		return f.Sync()
	}
	if res != nil {
		return &os.PathError{Op: "fsync", Path: f.Name(), Err: res}
	}
	return nil
}

// fsync submits an fsync of fd and waits for it on the eventfd. fallback
// is true when the fsync was not done (AIO cannot do it): the caller
// syncs. Control keeps fd open meanwhile.
func (a *aioSyncer) fsync(fd uintptr) (err error, fallback bool) {
	cb := &iocb{opcode: iocbCmdFsync, fildes: uint32(fd), flags: iocbFlagResfd, resfd: uint32(a.efdFD)}
	cbs := [1]*iocb{cb}
	if _, _, e := syscall.Syscall(syscall.SYS_IO_SUBMIT, a.ctx, 1, uintptr(unsafe.Pointer(&cbs[0]))); e != 0 {
		if e == syscall.EINVAL || e == syscall.EOPNOTSUPP || e == syscall.ENOSYS {
			a.ctx = 0 // this kernel has no AIO fsync: from now on, f.Sync
		}
		return nil, true
	}
	var n [8]byte
	_, rerr := a.efd.Read(n[:])
	var ev ioEvent
	for {
		// The completion is in (the eventfd counted it); after a failed
		// read, this waits for it, holding the P (never seen).
		k, _, e := syscall.Syscall6(syscall.SYS_IO_GETEVENTS, a.ctx, 1, 1, uintptr(unsafe.Pointer(&ev)), 0, 0)
		if e == syscall.EINTR {
			continue
		}
		if e != 0 || k != 1 {
			a.ctx = 0
			return nil, true // the fsync's outcome is unknown: sync again
		}
		break
	}
	if rerr != nil {
		a.ctx = 0
	}
	switch e := syscall.Errno(-ev.res); {
	case ev.res >= 0:
		return nil, false
	case e == syscall.EINVAL || e == syscall.EOPNOTSUPP:
		return nil, true // not on this file system
	default:
		return e, false
	}
}
