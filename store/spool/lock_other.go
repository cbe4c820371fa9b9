//go:build !unix

package spool

import "io"

type noLock struct{}

func (noLock) Close() error { return nil }

// lockDir does nothing where flock is not available.
func lockDir(string) (io.Closer, error) { return noLock{}, nil }
