package control

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/gateway/auth"
	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

var jwtSecret = []byte("control-plane-test-secret-32-bytes-long!")

// harness is a control Server on loopback over the test database, with a
// recording Notifier.
type harness struct {
	t      *testing.T
	url    string
	admin  *store.Admin
	st     *store.Store
	notify *recordingNotifier
}

type recordingNotifier struct {
	mu       sync.Mutex
	revoked  [][32]byte
	changed  [][32]byte
	orgsGone []uuid.UUID
	catalogs []*uuid.UUID // nil: the shared catalog
}

func (n *recordingNotifier) Revoke(_ context.Context, h ...[32]byte) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.revoked = append(n.revoked, h...)
	return nil
}

func (n *recordingNotifier) Invalidate(_ context.Context, h ...[32]byte) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.changed = append(n.changed, h...)
	return nil
}

func (n *recordingNotifier) InvalidateOrg(_ context.Context, org uuid.UUID) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.orgsGone = append(n.orgsGone, org)
	return nil
}

func (n *recordingNotifier) InvalidateCatalog(_ context.Context, org *uuid.UUID) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.catalogs = append(n.catalogs, org)
	return nil
}

// newHarness starts a Server; each of with may change its Options first.
func newHarness(t *testing.T, with ...func(*Options)) *harness {
	t.Helper()
	h := &harness{t: t, admin: storetest.PlacedAdmin(t), st: storetest.Open(t, store.Options{}), notify: &recordingNotifier{}}
	v, err := auth.NewJWTVerifier(auth.JWTConfig{HS256Secret: jwtSecret})
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{Admin: h.admin, Store: h.st, JWT: v, Notify: h.notify, SessionTTL: time.Minute,
		Upstreams: []string{"default", "second"}}
	for _, w := range with {
		w(&opts)
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	h.url = "http://" + ln.Addr().String()
	return h
}

// operator makes an operator token of scope (expiring at exp, if set).
func (h *harness) operator(scope string, exp *time.Time) (token string, id uuid.UUID) {
	h.t.Helper()
	token, hash := NewOperatorToken()
	tok, err := h.admin.CreateAdminToken(context.Background(), "test "+scope, scope, hash, exp)
	if err != nil {
		h.t.Fatal(err)
	}
	return token, tok.ID
}

// tenantJWT signs a tenant administrator's JWT for org.
func tenantJWT(t *testing.T, org uuid.UUID, role string, exp time.Time) string {
	t.Helper()
	claims := jwt.MapClaims{"sub": "admin@" + org.String()[:8], "organization_id": org.String(), "exp": exp.Unix(), "iat": time.Now().Unix()}
	if role != "" {
		claims["role"] = role
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(jwtSecret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// reply is an answer of the control listener.
type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r reply) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decoding %s: %v", r.body, err)
	}
}

// errorCode returns the error's code, param and message.
func (r reply) errorParts(t *testing.T) (code, param, msg string) {
	t.Helper()
	var e struct {
		Error struct {
			Message   string  `json:"message"`
			Code      *string `json:"code"`
			Param     *string `json:"param"`
			RequestID string  `json:"request_id"`
		} `json:"error"`
	}
	r.json(t, &e)
	if e.Error.RequestID == "" || e.Error.RequestID != r.header.Get("X-Request-Id") {
		t.Errorf("error without its request id: %s (header %q)", r.body, r.header.Get("X-Request-Id"))
	}
	if e.Error.Code != nil {
		code = *e.Error.Code
	}
	if e.Error.Param != nil {
		param = *e.Error.Param
	}
	msg, _, _ = strings.Cut(e.Error.Message, " (request id")
	return code, param, msg
}

// do sends method path with token (if any) and body (a string sent as
// it is, or a value encoded as JSON).
func (h *harness) do(method, path, token string, body any, headers ...string) reply {
	h.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			h.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, h.url+path, rd)
	if err != nil {
		h.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return reply{resp.StatusCode, resp.Header, b}
}

// must sends a request and fails the test unless it answers want.
func (h *harness) must(want int, method, path, token string, body any, headers ...string) reply {
	h.t.Helper()
	r := h.do(method, path, token, body, headers...)
	if r.status != want {
		h.t.Fatalf("%s %s: %d %s, want %d", method, path, r.status, r.body, want)
	}
	return r
}
