// Package linger closes a connection the way net/http does after an
// answer sent before the request was read to its end (a 413 for an
// oversized body, above all): it sends its FIN behind the answer, reads
// and discards what the client is still sending, and closes only when
// the client has closed its side, or after a bound of time or bytes.
//
// fasthttp answers such a request and closes at once. The bytes still
// arriving then meet a closed socket, the kernel resets the connection,
// and a reset discards whatever the client had not read yet: the client
// sees "connection reset by peer" instead of the answer.
package linger

import (
	"io"
	"net"
	"sync/atomic"
	"time"
)

const (
	// MaxWait bounds how long a closed connection is drained.
	MaxWait = time.Second
	// MaxBytes bounds how much of it is read and thrown away.
	MaxBytes = 8 << 20
	// MaxConns bounds how many connections linger at once; beyond it
	// they are closed at once, as before.
	MaxConns = 1024
)

// Listener wraps ln so that Mark can ask for a lingering close.
func Listener(ln net.Listener) net.Listener { return &listener{Listener: ln} }

// Mark asks that c, if it came from a Listener, linger when closed. It
// reports whether it will.
func Mark(c net.Conn) bool {
	lc, ok := c.(*conn)
	if ok {
		lc.linger.Store(true)
	}
	return ok
}

type listener struct {
	net.Listener
	lingering atomic.Int64
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &conn{Conn: c, l: l}, nil
}

type conn struct {
	net.Conn
	l      *listener
	linger atomic.Bool
	closed atomic.Bool
}

// halfCloser is a connection that can send its FIN and go on reading
// (*net.TCPConn, *tls.Conn, *net.UnixConn).
type halfCloser interface{ CloseWrite() error }

func (c *conn) Close() error {
	if !c.linger.Load() || c.closed.Swap(true) {
		return c.Conn.Close()
	}
	hc, ok := c.Conn.(halfCloser)
	if !ok || c.l.lingering.Add(1) > MaxConns {
		if ok {
			c.l.lingering.Add(-1)
		}
		return c.Conn.Close()
	}
	if err := hc.CloseWrite(); err != nil {
		c.l.lingering.Add(-1)
		return c.Conn.Close()
	}
	// The FIN follows the answer, which the client can now read while it
	// finishes its request; the drain runs apart, so that the server's
	// worker is free at once.
	go func() {
		defer c.l.lingering.Add(-1)
		_ = c.Conn.SetReadDeadline(time.Now().Add(MaxWait))
		_, _ = io.CopyN(io.Discard, c.Conn, MaxBytes)
		_ = c.Conn.Close()
	}()
	return nil
}
