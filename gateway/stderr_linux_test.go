package gateway

import (
	"io"
	"os"
	"syscall"
	"testing"
)

// captureStderr points file descriptor 2 at a pipe until the returned
// function is called, which restores it, copies what was captured to the
// real stderr (so nothing, e.g. a race report, is lost) and returns it.
// Libraries that log on their own write there (fasthttp's and go-redis's
// default loggers hold os.Stderr from init), so this sees what they print.
func captureStderr(t *testing.T) func() string {
	t.Helper()
	saved, err := syscall.Dup(2)
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Dup3(int(w.Fd()), 2, 0); err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(r); got <- b }()
	return func() string {
		syscall.Dup3(saved, 2, 0) //nolint:errcheck // restoring the test binary's own stderr
		syscall.Close(saved)
		w.Close()
		b := <-got
		r.Close()
		os.Stderr.Write(b) //nolint:errcheck // best effort echo
		return string(b)
	}
}
