//go:build !linux

package proctest

import "syscall"

// procAttr: without Linux's Pdeathsig a child can outlive a test process
// that dies abruptly; the test's cleanup still kills it otherwise.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{}
}
