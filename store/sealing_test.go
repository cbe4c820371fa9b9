package store_test

import (
	"bytes"
	"context"
	"errors"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/seal"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// countingKEK is a fake remote KMS: a local keyset's AEAD that counts its
// calls, so that a test sees what reaches the "KMS".
type countingKEK struct {
	*seal.LocalKEK
	decrypts int64
}

func (k *countingKEK) Decrypt(ct, ad []byte) ([]byte, error) {
	k.decrypts++
	return k.LocalKEK.Decrypt(ct, ad)
}

func newKEK(t testing.TB) *seal.LocalKEK {
	t.Helper()
	k, err := seal.NewLocalKEK()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// sealedOrgs creates organizations through the Admin, sealed or not, and
// deletes them when the test ends.
func sealedOrgs(t testing.TB, a *store.Admin, capture string, sealed ...bool) []uuid.UUID {
	t.Helper()
	ctx := context.Background()
	var orgs []uuid.UUID
	for _, s := range sealed {
		o, err := a.CreateOrgSealed(ctx, "seal test", capture, s)
		if err != nil {
			t.Fatal(err)
		}
		orgs = append(orgs, o.ID)
	}
	owner := storetest.OwnerPool(t)
	t.Cleanup(func() {
		if _, err := owner.Exec(context.Background(), `DELETE FROM organizations WHERE id = ANY($1)`, orgs); err != nil {
			t.Errorf("deleting test organizations: %v", err)
		}
	})
	return orgs
}

type storedRow struct {
	ID                       uuid.UUID
	Org                      uuid.UUID
	Prompt, Response         *string
	PromptSealed, RespSealed []byte
}

// ownerRows reads a run's rows as the owner (RLS bypassed: what a dump,
// a replica or a SQL injection past RLS would get).
func ownerRows(t testing.TB, owner *pgxpool.Pool, run string) []storedRow {
	t.Helper()
	rows, _ := owner.Query(context.Background(), `SELECT id, organization_id, prompt_text, response, prompt_sealed, response_sealed
		FROM prompts WHERE split_part(request_id, '/', 2) = $1 ORDER BY id`, run)
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[storedRow])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func writeRun(t *testing.T, st *store.Store, orgs []uuid.UUID, run string, n int) {
	t.Helper()
	w := startWriter(t, st, store.WriterOptions{})
	for i := range n {
		w.Record(rec(orgs[i%len(orgs)], run, i))
	}
	if err := w.stop(t); err != nil {
		t.Fatal(err)
	}
	if s := w.Stats(); s.Written != int64(n) || s.DeadLetters != 0 {
		t.Fatalf("writer stats %+v, want %d written", s, n)
	}
}

// As the owner, reading prompts directly: ciphertext only for sealed
// tenants (nothing of the text in clear, in any column), clear text for
// the others; the read API gives each sealed tenant its own text back.
func TestSealedRowsAreCiphertext(t *testing.T) {
	kek := &countingKEK{LocalKEK: newKEK(t)}
	st := storetest.Open(t, store.Options{Seal: store.SealOptions{KEK: kek}})
	a := storetest.Admin(t)
	a.UseKEK(kek)
	owner := storetest.OwnerPool(t)
	orgs := sealedOrgs(t, a, store.CaptureFull, true, true, false)
	run := "sl" + uuid.NewString()[:8]
	writeRun(t, st, orgs, run, 30)

	rows := ownerRows(t, owner, run)
	if len(rows) != 30 {
		t.Fatalf("%d rows, want 30", len(rows))
	}
	for _, r := range rows {
		sealed := r.Org != orgs[2]
		if sealed {
			if r.Prompt != nil || r.Response != nil || r.PromptSealed == nil || r.RespSealed == nil {
				t.Errorf("sealed tenant's row %s: clear %v/%v, sealed %d/%d bytes", r.ID, r.Prompt != nil, r.Response != nil, len(r.PromptSealed), len(r.RespSealed))
			}
			if bytes.Contains(r.PromptSealed, []byte("secret")) || bytes.Contains(r.RespSealed, []byte("secret")) {
				t.Errorf("row %s: the sealed column holds the text in clear", r.ID)
			}
		} else if r.Prompt == nil || !strings.Contains(*r.Prompt, "secret prompt") || r.PromptSealed != nil || r.RespSealed != nil {
			t.Errorf("clear tenant's row %s: prompt %v, sealed %d bytes", r.ID, r.Prompt, len(r.PromptSealed))
		}
	}

	ctx := context.Background()
	for _, org := range orgs {
		ps, err := st.ListPrompts(ctx, org, store.PromptFilter{Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		if len(ps) != 10 {
			t.Errorf("org %s: %d rows, want 10", org, len(ps))
		}
		for _, p := range ps {
			if p.Error != nil || p.Prompt == nil || p.Response == nil ||
				!strings.HasPrefix(*p.Response, "secret answer") || !strings.HasPrefix(p.RequestID, org.String()) {
				t.Errorf("org %s row %s: error %v, prompt %v, response %v", org, p.ID, p.Error, p.Prompt, p.Response)
			}
		}
		if len(ps) > 0 {
			p, err := st.GetPrompt(ctx, org, ps[0].ID)
			if err != nil || p.Error != nil || p.Prompt == nil || *p.Prompt != *ps[0].Prompt {
				t.Errorf("GetPrompt: %+v, %v", p, err)
			}
		}
	}
	// The data keys were unwrapped once per sealed organization (one by
	// the writer, none by the reads: the cache), not per row.
	hits, misses, failures := st.SealKeyCacheStats()
	if kek.decrypts != 2 || failures != 0 {
		t.Errorf("KEK decryptions %d (cache hits %d, misses %d, failures %d), want 2", kek.decrypts, hits, misses, failures)
	}
}

// Swapping ciphertexts between two tenants' rows, between two rows of one
// tenant, and between a row's prompt and response: the read API gives an
// error for each of those rows, never the other's text; the untouched
// rows still read.
func TestSealedSwappedCiphertextsFail(t *testing.T) {
	kek := newKEK(t)
	st := storetest.Open(t, store.Options{Seal: store.SealOptions{KEK: kek}})
	a := storetest.Admin(t)
	a.UseKEK(kek)
	owner := storetest.OwnerPool(t)
	orgs := sealedOrgs(t, a, store.CaptureFull, true, true)
	A := orgs[0]
	run := "sw" + uuid.NewString()[:8]
	writeRun(t, st, orgs, run, 8)
	var as, bs []storedRow
	for _, r := range ownerRows(t, owner, run) {
		if r.Org == A {
			as = append(as, r)
		} else {
			bs = append(bs, r)
		}
	}
	ctx := context.Background()
	set := func(r storedRow, p, resp []byte) {
		t.Helper()
		if _, err := owner.Exec(ctx, `UPDATE prompts SET prompt_sealed = $3, response_sealed = $4 WHERE organization_id = $1 AND id = $2`,
			r.Org, r.ID, p, resp); err != nil {
			t.Fatal(err)
		}
	}
	set(as[0], bs[0].PromptSealed, bs[0].RespSealed) // B's ciphertext in A's row
	set(bs[0], as[0].PromptSealed, as[0].RespSealed) // and A's in B's
	set(as[1], as[2].PromptSealed, as[2].RespSealed) // another row of A's
	set(as[3], as[3].RespSealed, as[3].PromptSealed) // prompt and response swapped
	broken := map[uuid.UUID]bool{as[0].ID: true, bs[0].ID: true, as[1].ID: true, as[3].ID: true}
	store.ForgetSealKeyForTest(st, A)

	for _, org := range orgs {
		ps, err := st.ListPrompts(ctx, org, store.PromptFilter{Limit: 100})
		if err != nil {
			t.Fatalf("ListPrompts: %v (a row that does not decrypt must not fail the list)", err)
		}
		if len(ps) != 4 {
			t.Fatalf("%d rows, want 4", len(ps))
		}
		for _, p := range ps {
			if broken[p.ID] {
				if p.Error == nil || p.Prompt != nil || p.Response != nil {
					t.Errorf("tampered row %s: error %v, prompt %v, response %v; want an error and no text", p.ID, p.Error, p.Prompt, p.Response)
				}
				g, err := st.GetPrompt(ctx, org, p.ID)
				if err != nil || g.Error == nil || g.Prompt != nil {
					t.Errorf("GetPrompt of tampered row %s: %+v, %v", p.ID, g, err)
				}
				continue
			}
			if p.Error != nil || p.Prompt == nil || !strings.HasPrefix(p.RequestID, org.String()) {
				t.Errorf("untouched row %s: error %v, prompt %v", p.ID, p.Error, p.Prompt)
			}
		}
	}
}

// Tenant B cannot get A's text by any path: not through its own reads,
// not with A's wrapped keyset copied into its own key row (it is bound to
// A's id), not with A's ciphertext copied into its rows; and in its
// tenant context it sees no key row but its own.
func TestSealedTenantCannotReadAnother(t *testing.T) {
	kek := newKEK(t)
	st := storetest.Open(t, store.Options{Seal: store.SealOptions{KEK: kek}})
	a := storetest.Admin(t)
	a.UseKEK(kek)
	owner := storetest.OwnerPool(t)
	orgs := sealedOrgs(t, a, store.CaptureFull, true, true)
	A, B := orgs[0], orgs[1]
	run := "tb" + uuid.NewString()[:8]
	writeRun(t, st, orgs, run, 6)
	ctx := context.Background()

	err := st.InTenant(ctx, B, func(tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, `SELECT organization_id FROM organization_keys`)
		seen, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
		if err != nil {
			return err
		}
		if len(seen) != 1 || seen[0] != B {
			t.Errorf("B's context sees key rows of %v, want only B's", seen)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	var aRows []storedRow
	for _, r := range ownerRows(t, owner, run) {
		if r.Org == A {
			aRows = append(aRows, r)
		}
	}
	for _, r := range aRows {
		if _, err := st.GetPrompt(ctx, B, r.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("B's GetPrompt of A's row: %v, want ErrNotFound", err)
		}
	}
	// A's keyset and ciphertexts planted in B's rows (an attacker with the
	// owner role): B's reads fail on every row, and show nothing of A's.
	if _, err := owner.Exec(ctx, `UPDATE organization_keys SET keyset = (SELECT keyset FROM organization_keys WHERE organization_id = $1)
		WHERE organization_id = $2`, A, B); err != nil {
		t.Fatal(err)
	}
	if _, err := owner.Exec(ctx, `UPDATE prompts SET prompt_sealed = $2, response_sealed = $3
		WHERE organization_id = $1 AND split_part(request_id, '/', 2) = $4`, B, aRows[0].PromptSealed, aRows[0].RespSealed, run); err != nil {
		t.Fatal(err)
	}
	store.ForgetSealKeyForTest(st, B)
	ps, err := st.ListPrompts(ctx, B, store.PromptFilter{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		if p.Error == nil || p.Prompt != nil || p.Response != nil {
			t.Errorf("B's row %s with A's keyset and ciphertext: error %v, prompt %v", p.ID, p.Error, p.Prompt)
		}
	}
}

// Metadata-only capture stores nothing to encrypt: a sealed organization
// in metadata mode has no text, clear or sealed.
func TestSealedMetadataCaptureStoresNothing(t *testing.T) {
	kek := newKEK(t)
	st := storetest.Open(t, store.Options{Seal: store.SealOptions{KEK: kek}})
	a := storetest.Admin(t)
	a.UseKEK(kek)
	owner := storetest.OwnerPool(t)
	orgs := sealedOrgs(t, a, store.CaptureMetadata, true)
	run := "md" + uuid.NewString()[:8]
	writeRun(t, st, orgs, run, 5)
	for _, r := range ownerRows(t, owner, run) {
		if r.Prompt != nil || r.Response != nil || r.PromptSealed != nil || r.RespSealed != nil {
			t.Errorf("metadata-mode row %s stores text: %+v", r.ID, r)
		}
	}
}

// A sealed organization's rows never reach the table in clear, even when
// the writer believes it unsealed (its cache from before `--seal on`):
// the INSERT drops the clear text of a sealed organization.
func TestSealedNeverStoredInClear(t *testing.T) {
	kek := newKEK(t)
	st := storetest.Open(t, store.Options{Seal: store.SealOptions{KEK: kek, KeyCacheTTL: time.Hour}})
	a := storetest.Admin(t)
	a.UseKEK(kek)
	owner := storetest.OwnerPool(t)
	orgs := sealedOrgs(t, a, store.CaptureFull, false)
	run := "nc" + uuid.NewString()[:8]
	writeRun(t, st, orgs, run, 2) // caches "not sealed"
	on := true
	if _, err := a.UpdateOrg(context.Background(), orgs[0], store.OrgChanges{Seal: &on}); err != nil {
		t.Fatal(err)
	}
	run2 := "nc" + uuid.NewString()[:8]
	writeRun(t, st, orgs, run2, 2)
	for _, r := range ownerRows(t, owner, run2) {
		if r.Prompt != nil || r.Response != nil {
			t.Errorf("row %s of a sealed organization stored in clear", r.ID)
		}
	}
	store.ForgetSealKeyForTest(st, orgs[0])
	run3 := "nc" + uuid.NewString()[:8]
	writeRun(t, st, orgs, run3, 2)
	for _, r := range ownerRows(t, owner, run3) {
		if r.Prompt != nil || r.PromptSealed == nil {
			t.Errorf("row %s after the cache expired: not sealed", r.ID)
		}
	}
}

// org rekey: new rows use a new data key (another key id in the
// ciphertext's header), the old rows still read.
func TestSealedRekey(t *testing.T) {
	kek := newKEK(t)
	st := storetest.Open(t, store.Options{Seal: store.SealOptions{KEK: kek}})
	a := storetest.Admin(t)
	a.UseKEK(kek)
	owner := storetest.OwnerPool(t)
	orgs := sealedOrgs(t, a, store.CaptureFull, true)
	run1, run2 := "rk"+uuid.NewString()[:8], "rk"+uuid.NewString()[:8]
	writeRun(t, st, orgs, run1, 3)
	n, err := a.RekeyOrg(context.Background(), orgs[0])
	if err != nil || n != 2 {
		t.Fatalf("RekeyOrg: %d keys, %v; want 2", n, err)
	}
	store.ForgetSealKeyForTest(st, orgs[0]) // a running gateway: within the cache TTL
	writeRun(t, st, orgs, run2, 3)
	old, fresh := ownerRows(t, owner, run1), ownerRows(t, owner, run2)
	if bytes.Equal(old[0].PromptSealed[:5], fresh[0].PromptSealed[:5]) {
		t.Errorf("the same key id %x before and after rekey", old[0].PromptSealed[:5])
	}
	ps, err := st.ListPrompts(context.Background(), orgs[0], store.PromptFilter{Limit: 100})
	if err != nil || len(ps) != 6 {
		t.Fatalf("%d rows, %v", len(ps), err)
	}
	for _, p := range ps {
		if p.Error != nil || p.Prompt == nil {
			t.Errorf("row %s after rekey: %v", p.ID, p.Error)
		}
	}
}

// Crypto-shredding: the tenant's rows and key row copied (as the owner: a
// backup) before `org delete`; after it, the data key is gone (audited,
// before the rows), and the saved ciphertexts open under none of the keys
// that remain. A backup that also holds the wrapped keyset is read with
// the KEK; once the KEK is rotated (its old key retired), it no longer
// unwraps.
func TestCryptoShredding(t *testing.T) {
	kek := newKEK(t)
	st := storetest.Open(t, store.Options{Seal: store.SealOptions{KEK: kek}})
	a := storetest.Admin(t)
	a.UseKEK(kek)
	owner := storetest.OwnerPool(t)
	orgs := sealedOrgs(t, a, store.CaptureFull, true, true)
	victim := orgs[0]
	run := "cs" + uuid.NewString()[:8]
	writeRun(t, st, orgs, run, 10)
	ctx := context.Background()
	var backup []storedRow
	for _, r := range ownerRows(t, owner, run) {
		if r.Org == victim {
			backup = append(backup, r)
		}
	}
	var savedKeyset []byte
	if err := owner.QueryRow(ctx, `SELECT keyset FROM organization_keys WHERE organization_id = $1`, victim).Scan(&savedKeyset); err != nil {
		t.Fatal(err)
	}
	if _, err := a.DeleteOrg(ctx, victim); err != nil {
		t.Fatal(err)
	}
	var keys, prompts int
	if err := owner.QueryRow(ctx, `SELECT (SELECT count(*) FROM organization_keys WHERE organization_id = $1),
		(SELECT count(*) FROM prompts WHERE organization_id = $1)`, victim).Scan(&keys, &prompts); err != nil || keys != 0 || prompts != 0 {
		t.Fatalf("after delete: %d key rows, %d prompts (%v)", keys, prompts, err)
	}
	var actions []string
	rows, _ := owner.Query(ctx, `SELECT action FROM audit_log WHERE organization_id = $1 ORDER BY id`, victim)
	actions, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(actions, ",") != "org.create,org.shred,org.delete" {
		t.Errorf("audit trail %v, want the shredding before the deletion", actions)
	}

	// Every data key that remains, unwrapped as its own organization's.
	rows, _ = owner.Query(ctx, `SELECT organization_id, keyset FROM organization_keys`)
	type keyRow struct {
		Org    uuid.UUID
		Keyset []byte
	}
	remaining, err := pgx.CollectRows(rows, pgx.RowToStructByPos[keyRow])
	if err != nil {
		t.Fatal(err)
	}
	tried := 0
	for _, k := range remaining {
		h, err := seal.Unwrap(kek, k.Org, k.Keyset)
		if err != nil {
			continue // another test's KEK
		}
		p, err := seal.Primitive(h)
		if err != nil {
			t.Fatal(err)
		}
		tried++
		for _, r := range backup {
			for _, org := range []uuid.UUID{victim, k.Org} {
				if _, err := p.Decrypt(r.PromptSealed, seal.AppendRowAD(nil, seal.FieldPrompt, org, r.ID)); err == nil {
					t.Fatalf("the shredded tenant's saved row %s opens with %s's data key", r.ID, k.Org)
				}
			}
		}
	}
	if tried == 0 {
		t.Fatal("no remaining data key to try")
	}

	// The backup's own wrapped keyset: readable with the KEK until it is
	// rotated and the old key retired.
	if _, err := seal.Unwrap(kek, victim, savedKeyset); err != nil {
		t.Fatalf("the backup's keyset should still unwrap before the KEK rotation: %v", err)
	}
	rotated, err := kek.Rotated()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.RewrapAllForTest(ctx, rotated, orgs[1:]); err != nil {
		t.Fatal(err)
	}
	retired, err := rotated.PrimaryOnly()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := seal.Unwrap(retired, victim, savedKeyset); err == nil {
		t.Error("the backup's keyset still unwraps after the KEK rotation")
	}
	st2 := storetest.Open(t, store.Options{Seal: store.SealOptions{KEK: retired}})
	ps, err := st2.ListPrompts(ctx, orgs[1], store.PromptFilter{Limit: 100})
	if err != nil || len(ps) != 5 {
		t.Fatalf("the other tenant after the rotation: %d rows, %v", len(ps), err)
	}
	for _, p := range ps {
		if p.Error != nil {
			t.Errorf("the other tenant's row %s after the rotation: %v", p.ID, p.Error)
		}
	}
}

// Records spooled while PostgreSQL was down are sealed when replayed.
func TestSealedReplay(t *testing.T) {
	kek := newKEK(t)
	storetest.Migrate(t)
	u, err := url.Parse(storetest.AppDSN())
	if err != nil || u.Host == "" {
		t.Fatalf("the app DSN is not a URL with a host")
	}
	proxy := storetest.NewFaultProxy(t, u.Host)
	u.Host = proxy.Addr()
	st, err := store.Open(context.Background(), u.String(), store.Options{Lazy: true, MaxConns: 4, Seal: store.SealOptions{KEK: kek}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	a := storetest.Admin(t)
	a.UseKEK(kek)
	owner := storetest.OwnerPool(t)
	orgs := sealedOrgs(t, a, store.CaptureFull, true)
	run := "rp" + uuid.NewString()[:8]
	dir := t.TempDir()
	proxy.Cut("refuse")
	w1 := startWriter(t, st, store.WriterOptions{SpoolDir: dir, WriteTimeout: 300 * time.Millisecond, FlushInterval: time.Hour})
	for i := range 20 {
		w1.Record(rec(orgs[0], run, i))
	}
	if err := w1.stop(t); err != nil {
		t.Fatal(err)
	}
	if s := w1.Stats(); s.Spooled != 20 {
		t.Fatalf("stats %+v, want 20 spooled", s)
	}
	proxy.Restore()
	w2 := startWriter(t, st, store.WriterOptions{SpoolDir: dir})
	waitFor(t, 30*time.Second, "the replay", func() bool { s := w2.Stats(); return s.SpoolBytes == 0 && !s.Replaying })
	if err := w2.stop(t); err != nil {
		t.Fatal(err)
	}
	rows := ownerRows(t, owner, run)
	if len(rows) != 20 {
		t.Fatalf("%d rows replayed, want 20", len(rows))
	}
	for _, r := range rows {
		if r.Prompt != nil || r.PromptSealed == nil {
			t.Errorf("replayed row %s not sealed", r.ID)
		}
	}
}

// A gateway must not start when sealing is set up and it has no KEK or
// the wrong one; on a database where it never was, any is fine.
func TestCheckKEK(t *testing.T) {
	ownerDSN, appDSN := storetest.ScratchDatabase(t)
	ctx := context.Background()
	if _, err := store.Migrate(ctx, ownerDSN); err != nil {
		t.Fatal(err)
	}
	kek, other := newKEK(t), newKEK(t)
	check := func(k seal.KEK, want error) {
		t.Helper()
		st, err := store.Open(ctx, appDSN, store.Options{Seal: store.SealOptions{KEK: k}})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if err := st.CheckKEK(ctx); !errors.Is(err, want) {
			t.Errorf("CheckKEK(%v) = %v, want %v", k, err, want)
		}
	}
	check(nil, nil)
	check(kek, nil)
	a, err := store.OpenAdmin(ctx, ownerDSN, "test")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if created, err := a.InitKEK(ctx, kek); err != nil || !created {
		t.Fatalf("InitKEK: %v, %v", created, err)
	}
	if created, err := a.InitKEK(ctx, kek); err != nil || created {
		t.Errorf("InitKEK again: %v, %v; want nothing done", created, err)
	}
	if _, err := a.InitKEK(ctx, other); !errors.Is(err, store.ErrKEKWrong) {
		t.Errorf("InitKEK with another key: %v, want ErrKEKWrong", err)
	}
	check(nil, store.ErrKEKMissing)
	check(other, store.ErrKEKWrong)
	check(kek, nil)
}

// The KEK file is read again when a data key does not unwrap: a gateway
// started before `key-encryption rotate` reads keys re-wrapped after it.
func TestFileKEKReloads(t *testing.T) {
	path := t.TempDir() + "/kek.json"
	old := newKEK(t)
	if err := old.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	fk, err := seal.OpenFileKEK(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("keyset file mode %v, %v; want 0600", fi.Mode(), err)
	}
	rotated, _ := old.Rotated()
	retired, _ := rotated.PrimaryOnly()
	if err := retired.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	org := uuid.New()
	dek, _ := seal.NewDEK()
	wrapped, _ := seal.Wrap(retired, org, dek)
	time.Sleep(1100 * time.Millisecond) // reloads at most once a second
	if _, err := seal.Unwrap(fk, org, wrapped); err != nil {
		t.Errorf("a key wrapped by the rotated KEK: %v", err)
	}
}

// BenchmarkSealedRead is BenchmarkReadAPI's list and get for a sealed
// tenant and a clear one, alternating: what decryption costs a read.
func BenchmarkSealedRead(b *testing.B) {
	kek := newKEK(b)
	st := storetest.Open(b, store.Options{Seal: store.SealOptions{KEK: kek}})
	a := storetest.Admin(b)
	a.UseKEK(kek)
	orgs := sealedOrgs(b, a, store.CaptureFull, true, false)
	w, err := store.NewWriter(st, store.WriterOptions{})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.Run(ctx) //nolint:errcheck // Close below reports
	run := "br" + uuid.NewString()[:8]
	var ids [2][]uuid.UUID
	for i := range 2000 {
		r := rec(orgs[i%2], run, i)
		r.Prompt = `{"messages":[{"role":"user","content":"` + strings.Repeat("lorem ipsum ", 80) + `"}]}`
		ids[i%2] = append(ids[i%2], r.ID)
		w.Record(r)
	}
	cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
	defer ccancel()
	if err := w.Close(cctx); err != nil {
		b.Fatal(err)
	}
	for round := range 2 {
		for k, name := range []string{"sealed", "clear"} {
			org := orgs[k]
			b.Run(name+"/list20/"+string(rune('a'+round)), func(b *testing.B) {
				var took []time.Duration
				for range b.N {
					t0 := time.Now()
					ps, err := st.ListPrompts(ctx, org, store.PromptFilter{Limit: 20})
					if err != nil || len(ps) != 20 || ps[0].Prompt == nil {
						b.Fatal(len(ps), err)
					}
					took = append(took, time.Since(t0))
				}
				reportPercentiles(b, took)
			})
			b.Run(name+"/get/"+string(rune('a'+round)), func(b *testing.B) {
				var took []time.Duration
				for i := range b.N {
					t0 := time.Now()
					p, err := st.GetPrompt(ctx, org, ids[k][i%len(ids[k])])
					if err != nil || p.Prompt == nil {
						b.Fatal(err)
					}
					took = append(took, time.Since(t0))
				}
				reportPercentiles(b, took)
			})
		}
	}
}

// BenchmarkWriterSealed is BenchmarkWriterTenants at 100 tenants (1 KB
// prompts, prepared statements), with the tenants' text in clear and
// sealed, alternating, twice: the ratio of the rows/s is what sealing
// costs the writer (its target: sealed at least 80% of clear).
func BenchmarkWriterSealed(b *testing.B) {
	kek := newKEK(b)
	st := storetest.Open(b, store.Options{MaxConns: 10, Seal: store.SealOptions{KEK: kek}})
	a := storetest.Admin(b)
	a.UseKEK(kek)
	owner := storetest.OwnerPool(b)
	clear, sealed := newOrgs(b, owner, 100), newOrgs(b, owner, 100)
	on := true
	for _, org := range sealed {
		if _, err := a.UpdateOrg(context.Background(), org, store.OrgChanges{Seal: &on}); err != nil {
			b.Fatal(err)
		}
	}
	for round := range 2 {
		for _, c := range []struct {
			name string
			orgs []uuid.UUID
		}{{"clear", clear}, {"sealed", sealed}} {
			b.Run(c.name+"/tenants=100/"+string(rune('a'+round)), func(b *testing.B) { benchWriterOrgs(b, st, store.WriterOptions{}, c.orgs) })
		}
	}
}

// reportPercentiles reports the median and the 99th percentile of took,
// in milliseconds.
func reportPercentiles(b *testing.B, took []time.Duration) {
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(took[len(took)*99/100].Microseconds())/1000, "p99-ms")
}
