//go:build !linux

package harness

import "syscall"

// procAttr: without Linux's Pdeathsig the harness's own cleanup stops its
// children.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{}
}
