package control

import (
	"crypto/sha256"
	"sync"
	"time"
)

// maxSessions bounds the console sessions held in memory; past it new
// logins get 503 until some expire or log out.
const maxSessions = 10000

// sessions are the console's logins, held in this process's memory by the
// hash of their token. A session carries what its login verified; an
// operator's session re-checks its token at every use, so that revoking
// the token ends it.
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

// create opens a session for p, ending at the TTL or at notAfter if that
// is earlier (a JWT's expiry; zero: none), and returns its token.
func (s *sessions) create(p principal, notAfter time.Time) (token string, expires time.Time, ok bool) {
	now := s.now()
	expires = now.Add(s.ttl)
	if !notAfter.IsZero() && notAfter.Before(expires) {
		expires = notAfter
	}
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
			return "", time.Time{}, false
		}
	}
	p.session = true
	s.m[sha256.Sum256([]byte(token))] = &session{p: p, expires: expires}
	return token, expires, true
}

// get returns the session of token, if it is open.
func (s *sessions) get(token string) (principal, time.Time, bool) {
	h := sha256.Sum256([]byte(token))
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.m[h]
	if !ok {
		return principal{}, time.Time{}, false
	}
	if !s.now().Before(ss.expires) {
		delete(s.m, h)
		return principal{}, time.Time{}, false
	}
	return ss.p, ss.expires, true
}

// end closes the session of token (logout).
func (s *sessions) end(token string) {
	s.mu.Lock()
	delete(s.m, sha256.Sum256([]byte(token)))
	s.mu.Unlock()
}
