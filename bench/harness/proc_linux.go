package harness

import "syscall"

// procAttr asks the kernel to kill a child if the harness dies first, so
// no server outlives a bench run.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
