package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/store"
	"github.com/bulkheadhq/bulkhead/store/seal"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

// The sealing commands end to end, on a database of their own (the KEK
// check they record makes every gateway on that database require the
// KEK): init, org create (sealed by default) / --seal off / update --seal,
// rekey, serve refusing a missing or wrong KEK, rotate, delete.
func TestSealingCLI(t *testing.T) {
	ownerDSN, appDSN := storetest.ScratchDatabase(t)
	ctx := context.Background()
	if _, err := store.Migrate(ctx, ownerDSN); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	kekFile := filepath.Join(dir, "kek.json")
	base := map[string]string{
		"BULKHEAD_ADMIN_DATABASE_URL": ownerDSN,
		"BULKHEAD_DATABASE_URL":       appDSN,
		"BULKHEAD_REDIS_URL":          "",
		"BULKHEAD_SPOOL_DIR":          filepath.Join(dir, "spool"),
		"BULKHEAD_LISTEN":             "127.0.0.1:0",
		"BULKHEAD_ADMIN_LISTEN":       "127.0.0.1:0",
	}
	withKEK := maps.Clone(base)
	withKEK["BULKHEAD_SEAL_KEYSET_FILE"] = kekFile
	run1 := func(env map[string]string, args ...string) (string, error) {
		t.Helper()
		var out, errOut bytes.Buffer
		// Bounded: a serve that wrongly starts returns when this ends.
		rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		err := run(rctx, args, lookupFrom(env), &out, &errOut)
		return out.String() + errOut.String(), err
	}
	mustRun := func(env map[string]string, args ...string) string {
		t.Helper()
		out, err := run1(env, args...)
		if err != nil {
			t.Fatalf("bulkhead %v: %v\n%s", args, err, out)
		}
		return out
	}
	orgOf := func(out string) store.Organization {
		t.Helper()
		var o store.Organization
		if err := json.Unmarshal([]byte(out), &o); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		return o
	}

	// Before init: sealing cannot be asked for.
	if out, err := run1(withKEK, "org", "create", "--name", "early", "--seal", "on"); err == nil {
		t.Errorf("org create --seal on before key-encryption init: %s", out)
	}
	mustRun(withKEK, "key-encryption", "init")
	if fi, err := os.Stat(kekFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("keyset file: %v, %v", fi, err)
	}
	if out := mustRun(withKEK, "key-encryption", "init"); !strings.Contains(out, "already") {
		t.Errorf("second init: %s", out)
	}

	sealed := orgOf(mustRun(withKEK, "org", "create", "--name", "sealed", "--json"))
	clear := orgOf(mustRun(withKEK, "org", "create", "--name", "clear", "--seal", "off", "--json"))
	if !sealed.Sealed || clear.Sealed {
		t.Fatalf("sealed by default: %v; --seal off: %v", sealed.Sealed, clear.Sealed)
	}
	if out, err := run1(base, "org", "update", clear.ID.String(), "--seal", "on"); err == nil || !strings.Contains(err.Error(), "BULKHEAD_SEAL_KEYSET") {
		t.Errorf("org update --seal on without a KEK: %v %s", err, out)
	}
	if o := orgOf(mustRun(withKEK, "org", "update", clear.ID.String(), "--seal", "on", "--json")); !o.Sealed {
		t.Error("org update --seal on did not seal")
	}
	if o := orgOf(mustRun(withKEK, "org", "update", clear.ID.String(), "--seal", "off", "--json")); o.Sealed {
		t.Error("org update --seal off did not unseal")
	}
	if out := mustRun(withKEK, "org", "rekey", sealed.ID.String()); !strings.Contains(out, "2 keys") {
		t.Errorf("org rekey: %s", out)
	}

	// serve: no KEK, or another one, and it refuses to start, saying why.
	if _, err := run1(base, "serve"); !errors.Is(err, store.ErrKEKMissing) {
		t.Errorf("serve without a KEK: %v, want ErrKEKMissing", err)
	}
	otherFile := filepath.Join(dir, "other.json")
	other, _ := seal.NewLocalKEK()
	if err := other.WriteFile(otherFile); err != nil {
		t.Fatal(err)
	}
	wrong := maps.Clone(base)
	wrong["BULKHEAD_SEAL_KEYSET_FILE"] = otherFile
	if _, err := run1(wrong, "serve"); !errors.Is(err, store.ErrKEKWrong) || !strings.Contains(err.Error(), "BULKHEAD_SEAL_KEYSET_FILE") {
		t.Errorf("serve with the wrong KEK: %v, want ErrKEKWrong naming the setting", err)
	}
	wrong["BULKHEAD_SEAL_KEYSET_FILE"] = filepath.Join(dir, "missing.json")
	if _, err := run1(wrong, "serve"); err == nil || !strings.Contains(err.Error(), "BULKHEAD_SEAL_KEYSET_FILE") {
		t.Errorf("serve with a missing keyset file: %v", err)
	}

	// A row of the sealed organization, then rotate: the data keys are
	// re-wrapped (the row untouched) and the old KEK no longer opens them.
	before, _ := seal.LoadLocalKEK(kekFile)
	st, err := store.Open(ctx, appDSN, store.Options{Seal: store.SealOptions{KEK: before}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	w, err := store.NewWriter(st, store.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go w.Run(wctx) //nolint:errcheck // Close reports
	w.Record(store.LogRecord{OrgID: sealed.ID, RequestID: "r1", Endpoint: "/v1/chat/completions", Model: "m", Prompt: "the secret prompt", Response: "the secret answer", Status: 200})
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	owner, err := pgx.Connect(ctx, ownerDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close(ctx)
	var rowBefore []byte
	if err := owner.QueryRow(ctx, `SELECT prompt_sealed FROM prompts WHERE organization_id = $1`, sealed.ID).Scan(&rowBefore); err != nil {
		t.Fatal(err)
	}
	if out := mustRun(withKEK, "key-encryption", "rotate"); !strings.Contains(out, "re-wrapped the data keys of 2 organizations") {
		t.Errorf("rotate: %s", out)
	}
	after, err := seal.LoadLocalKEK(kekFile)
	if err != nil || after.KeyID() == before.KeyID() || len(after.KeyIDs()) != 1 {
		t.Fatalf("keyset after rotate: %v, %v", after, err)
	}
	var wrapped, rowAfter []byte
	if err := owner.QueryRow(ctx, `SELECT k.keyset, p.prompt_sealed FROM organization_keys k, prompts p
		WHERE k.organization_id = $1 AND p.organization_id = $1`, sealed.ID).Scan(&wrapped, &rowAfter); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rowBefore, rowAfter) {
		t.Error("rotate touched a row")
	}
	if _, err := seal.Unwrap(before, sealed.ID, wrapped); err == nil {
		t.Error("the old KEK still opens a re-wrapped data key")
	}
	st2, err := store.Open(ctx, appDSN, store.Options{Seal: store.SealOptions{KEK: after}})
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	if err := st2.CheckKEK(ctx); err != nil {
		t.Errorf("CheckKEK with the rotated keyset: %v", err)
	}
	ps, err := st2.ListPrompts(ctx, sealed.ID, store.PromptFilter{Limit: 10})
	if err != nil || len(ps) != 1 || ps[0].Prompt == nil || *ps[0].Prompt != "the secret prompt" {
		t.Fatalf("after rotate: %+v, %v", ps, err)
	}

	// delete: the data keys go first, audited.
	mustRun(withKEK, "org", "delete", sealed.ID.String())
	var actions []string
	rows, _ := owner.Query(ctx, `SELECT action FROM audit_log WHERE organization_id = $1 ORDER BY id`, sealed.ID)
	if actions, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(actions, ","); !strings.HasSuffix(got, "org.rewrap,org.shred,org.delete") {
		t.Errorf("audit trail %s", got)
	}
	var left int
	if err := owner.QueryRow(ctx, `SELECT count(*) FROM organization_keys WHERE organization_id = $1`, sealed.ID).Scan(&left); err != nil || left != 0 {
		t.Errorf("%d key rows left (%v)", left, err)
	}
}
