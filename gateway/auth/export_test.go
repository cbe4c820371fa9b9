package auth

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
