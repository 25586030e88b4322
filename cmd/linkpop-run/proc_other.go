//go:build unix && !linux

package main

import "syscall"

// childProcAttr puts each child in its own process group, so a Ctrl-C in
// the terminal reaches only linkpop-run, which then stops the children in
// order. Without Linux's Pdeathsig, children outlive a linkpop-run that is
// killed with SIGKILL.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
