package main

import "syscall"

// childProcAttr puts each child in its own process group, so a Ctrl-C in
// the terminal reaches only linkpop-run, which then stops the children in
// order; and asks the kernel to send the child SIGTERM if linkpop-run dies
// without stopping it (Pdeathsig), so no component outlives it.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
