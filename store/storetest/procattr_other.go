//go:build !linux

package storetest

import "syscall"

// childProcAttr: only Linux can tie a child's life to its parent's; here
// the test's cleanups alone stop the servers it started.
func childProcAttr() *syscall.SysProcAttr { return nil }
