package storetest

import "syscall"

// sysProcAttr runs a helper process as cred (if not nil) and has the
// kernel kill it when the test process dies, also when a timeout or a
// panic skips the test's cleanups. (The death signal is set after the
// switch of user, which would clear it.)
func sysProcAttr(cred *runAs) *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if cred != nil {
		a.Credential = &syscall.Credential{Uid: uint32(cred.uid), Gid: uint32(cred.gid)}
	}
	return a
}
