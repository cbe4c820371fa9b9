//go:build !linux

package storetest

import "syscall"

// sysProcAttr: elsewhere than Linux a helper process outlives a test
// process that dies without its cleanups, and is not run as another user.
func sysProcAttr(cred *runAs) *syscall.SysProcAttr {
	if cred != nil {
		panic("storetest: running as root: run the tests as another user")
	}
	return nil
}
