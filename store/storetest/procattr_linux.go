package storetest

import "syscall"

// childProcAttr makes the kernel kill a server started by a test if the
// test binary dies before its cleanups run (a timeout panic, a kill).
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
