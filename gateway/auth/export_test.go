package auth

import (
	"time"

	"github.com/google/uuid"
)

// ForgetForTest drops a key from this instance's L1 caches, so that a
// benchmark can measure the L2 path.
func (a *Authenticator) ForgetForTest(hash [32]byte) {
	a.keys.Invalidate(hash)
	a.neg.Invalidate(hash)
}

// QueuedForTest is the number of L3 look-ups waiting for a batch.
func (a *Authenticator) QueuedForTest() int {
	return a.l3.queued()
}

// FillL1ForTest puts n distinct keys of distinct organizations in L1, as
// n first touches would.
func (a *Authenticator) FillL1ForTest(n int) {
	for i := range n {
		var h [32]byte
		h[0], h[1], h[2], h[3] = byte(i), byte(i>>8), byte(i>>16), byte(i>>24)
		org, id := uuid.New(), uuid.New()
		a.keys.Set(h, keyPrincipal(org, id, 600, 0, time.Time{}))
	}
}

// FillNegativeForTest puts n distinct unknown keys in the negative cache.
func (a *Authenticator) FillNegativeForTest(n int) {
	for i := range n {
		var h [32]byte
		h[0], h[1], h[2], h[3] = byte(i), byte(i>>8), byte(i>>16), byte(i>>24)
		a.neg.Set(h, struct{}{})
	}
}
