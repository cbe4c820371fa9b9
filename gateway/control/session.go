package control

import (
	"context"
	"crypto/sha256"
	"sync"
	"time"
)

// maxSessions bounds the console sessions held in memory; past it new
// logins get 503 until some expire or log out.
const maxSessions = 10000

// sessionStore holds the console's logins by the hash of their token. A
// session carries what its login verified; an operator's or an admin
// key's session re-checks its credential at every use (auth.go), so that
// revoking it ends the session.
type sessionStore interface {
	// create opens a session for p, ending at the TTL or at notAfter if
	// that is earlier (a JWT's expiry; zero: none), and returns its token.
	create(ctx context.Context, p principal, notAfter time.Time) (token string, expires time.Time, err error)
	// get returns the session of token, if it is open.
	get(ctx context.Context, token string) (p principal, expires time.Time, ok bool, err error)
	// end closes the session of token (logout), everywhere.
	end(ctx context.Context, token string) error
}

var (
	_ sessionStore = (*sessions)(nil)
	_ sessionStore = (*redisSessions)(nil)
)

// sessionExpiry is when a session opened at now ends.
func sessionExpiry(now time.Time, ttl time.Duration, notAfter time.Time) time.Time {
	expires := now.Add(ttl)
	if !notAfter.IsZero() && notAfter.Before(expires) {
		expires = notAfter
	}
	return expires
}

// sessions are the sessions of a control plane without Redis: in this
// process's memory, so lost at its restart and unknown to other replicas.
type sessions struct {
	mu  sync.Mutex
	m   map[[32]byte]*session
	ttl time.Duration
	now func() time.Time
}

type session struct {
	p       principal
	expires time.Time
}

func newSessions(ttl time.Duration, now func() time.Time) *sessions {
	return &sessions{m: map[[32]byte]*session{}, ttl: ttl, now: now}
}

func (s *sessions) create(_ context.Context, p principal, notAfter time.Time) (token string, expires time.Time, err error) {
	now := s.now()
	expires = sessionExpiry(now, s.ttl, notAfter)
	token = sessionTokenPrefix + random()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.m) >= maxSessions {
		for h, ss := range s.m {
			if !now.Before(ss.expires) {
				delete(s.m, h)
			}
		}
		if len(s.m) >= maxSessions {
			return "", time.Time{}, errTooManySessions
		}
	}
	p.session = true
	s.m[sha256.Sum256([]byte(token))] = &session{p: p, expires: expires}
	return token, expires, nil
}

func (s *sessions) get(_ context.Context, token string) (principal, time.Time, bool, error) {
	h := sha256.Sum256([]byte(token))
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.m[h]
	if !ok {
		return principal{}, time.Time{}, false, nil
	}
	if !s.now().Before(ss.expires) {
		delete(s.m, h)
		return principal{}, time.Time{}, false, nil
	}
	return ss.p, ss.expires, true, nil
}

func (s *sessions) end(_ context.Context, token string) error {
	s.mu.Lock()
	delete(s.m, sha256.Sum256([]byte(token)))
	s.mu.Unlock()
	return nil
}
