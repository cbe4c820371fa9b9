package storetest

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// FaultProxy forwards TCP connections to PostgreSQL until cut: then it
// closes every open connection and refuses (accepts and closes) or
// blackholes (accepts and never answers) new ones, until restored.
type FaultProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	mode  string // "up", "refuse", "blackhole"
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func NewFaultProxy(t testing.TB, target string) *FaultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &FaultProxy{ln: ln, target: target, mode: "up", conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.Cut("refuse")
		p.wg.Wait()
	})
	return p
}

func (p *FaultProxy) Addr() string { return p.ln.Addr().String() }

func (p *FaultProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		mode := p.mode
		switch mode {
		case "refuse":
			c.Close()
		case "blackhole":
			p.conns[c] = struct{}{}
		}
		p.mu.Unlock()
		if mode != "up" {
			continue
		}
		up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		if p.mode != "up" { // cut while dialling
			p.mu.Unlock()
			c.Close()
			up.Close()
			continue
		}
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		pipe := func(dst, src net.Conn) {
			defer p.wg.Done()
			io.Copy(dst, src)
			dst.Close()
			src.Close()
		}
		go pipe(c, up)
		go pipe(up, c)
	}
}

// Cut closes every connection and sets how new ones are treated.
func (p *FaultProxy) Cut(mode string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode = mode
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

// Restore lets connections through again (and drops blackholed ones).
func (p *FaultProxy) Restore() { p.Cut("up") }
