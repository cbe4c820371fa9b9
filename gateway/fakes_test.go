package gateway

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/bulkheadhq/bulkhead/cmd/mockllm/mock"
	"github.com/bulkheadhq/bulkhead/config"
	"github.com/bulkheadhq/bulkhead/gateway/auth"
	"github.com/bulkheadhq/bulkhead/ratelimit"
	"github.com/bulkheadhq/bulkhead/store"
)

// The service-free harness: for tests of what the gateway does with a
// request (headers, framing, streaming, error shapes, routing, redaction)
// rather than of the store, the key caches or the shared limits, which
// keep the harness with real PostgreSQL and Redis.

// newFakeHarness is a gateway in front of the mock upstream, with a
// fakeAuth, the limiter's in-process mode and a memRecorder: no
// PostgreSQL, no Redis. It and its upstreams, the mock and those a test
// serves on n, run on n: nil is a memNet of its own, in memory, with no
// port; loopback is for the rare test that needs what only TCP does.
func newFakeHarness(t *testing.T, n network, mod func(*config.Config)) *harness {
	t.Helper()
	return newFakeHarnessWith(t, n, mock.Options{}, mod)
}

func newFakeHarnessWith(t testing.TB, n network, mo mock.Options, mod func(*config.Config)) *harness {
	t.Helper()
	if n == nil {
		n = newMemNet(t)
	}
	h := &harness{t: t, net: n, fake: newFakeAuth(), rec: newMemRecorder()}
	h.configure(mo, mod)
	// The limiter without Redis decides in process, as a single instance
	// does: the real budgets, headers and 429s, kept in memory.
	h.limiter = ratelimit.New(nil, ratelimit.Options{})
	h.start(Deps{Auth: h.fake, Recorder: h.rec, Limiter: h.limiter})
	return h
}

// memNet is a network in memory (fasthttputil.InmemoryListener). Each
// listener gets a host of its own under .invalid, a name no resolver
// answers, so nothing on it is reached through, or reaches out to, the
// machine's network. Dialling a host that is not listening is refused, as
// a closed port is.
type memNet struct {
	t   testing.TB
	mu  sync.Mutex
	lns map[string]*fasthttputil.InmemoryListener
}

func newMemNet(t testing.TB) *memNet {
	return &memNet{t: t, lns: map[string]*fasthttputil.InmemoryListener{}}
}

func (n *memNet) listener() (net.Listener, string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	addr := "mem-" + strconv.Itoa(len(n.lns)+1) + ".invalid:80"
	ln := fasthttputil.NewInmemoryListener()
	n.lns[addr] = ln
	n.t.Cleanup(func() { ln.Close() })
	return ln, addr
}

func (n *memNet) listen(handler fasthttp.RequestHandler) string {
	ln, addr := n.listener()
	serveHandler(n.t, ln, handler)
	return addr
}

func (n *memNet) dial(addr string) (net.Conn, error) {
	n.mu.Lock()
	ln := n.lns[addr]
	n.mu.Unlock()
	if ln == nil {
		return nil, &net.OpError{Op: "dial", Net: "memory", Err: syscall.ECONNREFUSED}
	}
	return ln.Dial()
}

var _ network = (*memNet)(nil)

// fakeAuth is the authenticator of the service-free harness: it knows the
// keys the harness made (keyWithTPM) and, like auth.Authenticator, answers
// any other credential with auth.ErrUnauthenticated. fail, when set, is
// the answer to every credential: auth.ErrUnavailable or an
// *auth.ThrottledError, the real one's other errors.
type fakeAuth struct {
	mu   sync.Mutex
	keys map[string]*auth.Principal
	fail error
}

func newFakeAuth() *fakeAuth { return &fakeAuth{keys: map[string]*auth.Principal{}} }

var _ authenticator = (*fakeAuth)(nil)

func (f *fakeAuth) Authenticate(_ context.Context, cred []byte, _ netip.Addr) (*auth.Principal, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, f.fail
	}
	if p, ok := f.keys[string(cred)]; ok {
		return p, nil
	}
	return nil, auth.ErrUnauthenticated
}

// add makes key authenticate as the key nk describes, and returns the key
// as the store would.
func (f *fakeAuth) add(key string, nk store.NewKey) store.Key {
	k := store.Key{ID: uuid.New(), OrgID: nk.OrgID, Hash: nk.Hash, DisplayPrefix: nk.DisplayPrefix, Name: nk.Name,
		RateLimitPerMinute: nk.RateLimitPerMinute, TokensPerMinute: nk.TokensPerMinute, CreatedAt: time.Now()}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.keys[key] = &auth.Principal{Org: k.OrgID, KeyID: k.ID, Kind: auth.KindAPIKey, LimitKey: k.ID.String(), OrgText: k.OrgID.String(),
		RateLimitPerMinute: k.RateLimitPerMinute, TokensPerMinute: k.TokensPerMinute}
	return k
}

// failWith makes every credential fail with err from now on.
func (f *fakeAuth) failWith(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = err
}
