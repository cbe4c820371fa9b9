//go:build !linux

package gateway

import "testing"

// captureStderr sees file descriptor 2 only on Linux; elsewhere the std
// log capture of the test still applies.
func captureStderr(*testing.T) func() string { return func() string { return "" } }
