package proctest

import "syscall"

// procAttr asks the kernel to SIGKILL the child if the test process dies
// first (a panic, a timeout), so no child outlives its test.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
