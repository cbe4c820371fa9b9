package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/config"
	"github.com/bulkheadhq/bulkhead/gateway/apikey"
	"github.com/bulkheadhq/bulkhead/store"
)

// seed fills the database of BULKHEAD_ADMIN_DATABASE_URL (owner role)
// with the data the scale benchmarks need, in bulk, not through the
// admin actions: organizations, API keys (their secrets written to a
// file, one per line, for a load generator), and request-log rows spread
// over the last days, a share of them in one big tenant. Organizations
// are named PREFIX-N; `bulkhead org delete` or -drop removes them.
//
//	bulkhead-bench seed -orgs 10000 -keys 1000000 -rows 50000000 -big-rows 5000000 -days 30 -keys-file keys.txt
func seed(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("seed", flag.ContinueOnError)
	norgs := fs.Int("orgs", 10000, "organizations")
	nkeys := fs.Int("keys", 100000, "API keys, spread round-robin over the organizations")
	nrows := fs.Int64("rows", 1000000, "request-log rows in all")
	bigRows := fs.Int64("big-rows", 0, "of them, rows of the first organization (a big tenant)")
	days := fs.Int("days", 30, "the rows' created_at is spread over this many days back")
	keysFile := fs.String("keys-file", "", "write the keys' secrets here, one per line (empty: do not keep them)")
	prefix := fs.String("prefix", "seed", "organization name prefix")
	drop := fs.Bool("drop", false, "delete the organizations named PREFIX-* (and all their rows) instead")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *norgs < 1 || *nkeys < 0 || *nrows < 0 || *bigRows > *nrows || *days < 1 {
		return fmt.Errorf("seed: want -orgs >= 1, -keys and -rows >= 0, -big-rows <= -rows, -days >= 1")
	}
	cfg, err := config.Load("", os.LookupEnv)
	if err != nil {
		return err
	}
	if _, err := store.Migrate(ctx, cfg.AdminDatabaseURL.Reveal()); err != nil {
		return err
	}
	db, err := pgxpool.New(ctx, cfg.AdminDatabaseURL.Reveal())
	if err != nil {
		return err
	}
	defer db.Close()
	if *drop {
		return seedDrop(ctx, cfg, *prefix)
	}
	start := time.Now()

	orgs := make([]uuid.UUID, *norgs)
	names := make([]string, *norgs)
	for i := range orgs {
		orgs[i], names[i] = uuid.New(), fmt.Sprintf("%s-%d", *prefix, i)
	}
	for lo := 0; lo < len(orgs); lo += 10000 {
		hi := min(lo+10000, len(orgs))
		if _, err := db.Exec(ctx, `INSERT INTO organizations (id, name) SELECT * FROM unnest($1::uuid[], $2::text[])`,
			orgs[lo:hi], names[lo:hi]); err != nil {
			return fmt.Errorf("seed: organizations: %w", err)
		}
	}
	fmt.Printf("seed: %d organizations in %s\n", len(orgs), time.Since(start).Round(time.Millisecond))

	var out *bufio.Writer
	if *keysFile != "" {
		f, err := os.Create(*keysFile)
		if err != nil {
			return err
		}
		defer f.Close()
		out = bufio.NewWriter(f)
		defer out.Flush()
	}
	keyIDs := make([]uuid.UUID, *nkeys)
	t := time.Now()
	for lo := 0; lo < *nkeys; lo += 50000 {
		hi := min(lo+50000, *nkeys)
		rows := make([][]any, 0, hi-lo)
		for i := lo; i < hi; i++ {
			org := orgs[i%len(orgs)]
			key, err := apikey.Generate(org)
			if err != nil {
				return err
			}
			if out != nil {
				fmt.Fprintln(out, key)
			}
			h := apikey.Hash([]byte(key))
			keyIDs[i] = uuid.New()
			rows = append(rows, []any{org, keyIDs[i], h[:], apikey.Display(key), "seed", 100_000_000})
		}
		if _, err := db.CopyFrom(ctx, pgx.Identifier{"api_keys"},
			[]string{"organization_id", "id", "key_hash", "display_prefix", "name", "rate_limit_per_minute"},
			pgx.CopyFromRows(rows)); err != nil {
			return fmt.Errorf("seed: keys: %w", err)
		}
	}
	fmt.Printf("seed: %d keys in %s\n", *nkeys, time.Since(t).Round(time.Millisecond))

	// Rows: the big tenant's first, then the rest round-robin, each
	// statement one organization's share (the references trigger checks a
	// statement's organizations), at most 200,000 rows.
	t = time.Now()
	var written int64
	insert := func(org uuid.UUID, key *uuid.UUID, n int64) error {
		for n > 0 {
			m := min(n, 200000)
			if _, err := db.Exec(ctx, `INSERT INTO prompts (organization_id, id, request_id, api_key_id, endpoint, model,
				prompt_text, response, prompt_tokens, completion_tokens, usage_tokens, usage_source, status, latency_ms, created_at)
				SELECT $1, prompts_row_id(c.t, gen_random_uuid()), 'seed-' || g, $2, '/v1/chat/completions', 'model-' || (g % 5),
					'{"messages":[{"role":"user","content":"seeded prompt ' || g || '"}]}', 'seeded answer', 20, 30, 50, 'upstream', 200, 40, c.t
				FROM generate_series(1, $3::bigint) g, LATERAL (SELECT now() - random() * make_interval(days => $4) AS t) c`,
				org, key, m, *days); err != nil {
				return fmt.Errorf("seed: rows: %w", err)
			}
			n -= m
			written += m
			if written%(5*200000) < m {
				fmt.Printf("seed: %d rows, %s\n", written, time.Since(t).Round(time.Second))
			}
		}
		return nil
	}
	keyOf := func(i int) *uuid.UUID {
		if i < len(keyIDs) {
			return &keyIDs[i]
		}
		return nil
	}
	if err := insert(orgs[0], keyOf(0), *bigRows); err != nil {
		return err
	}
	rest, others := *nrows-*bigRows, int64(max(len(orgs)-1, 1))
	for i := int64(0); i < others && rest > 0; i++ {
		share := rest / (others - i)
		o := int(i) + 1
		if o >= len(orgs) {
			o = 0
		}
		if err := insert(orgs[o], keyOf(o), share); err != nil {
			return err
		}
		rest -= share
	}
	if _, err := db.Exec(ctx, `ANALYZE prompts`); err != nil {
		return err
	}
	fmt.Printf("seed: %d rows in %s; done in %s\n", written, time.Since(t).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	fmt.Printf("seed: the big tenant is %s (%s-0)\n", orgs[0], *prefix)
	return nil
}

// seedDrop deletes the organizations a seed made, with all their rows.
func seedDrop(ctx context.Context, cfg config.Config, prefix string) error {
	a, err := store.OpenAdmin(ctx, cfg.AdminDatabaseURL.Reveal(), "bench-seed")
	if err != nil {
		return err
	}
	defer a.Close()
	all, err := a.Orgs(ctx)
	if err != nil {
		return err
	}
	n := 0
	for _, o := range all {
		if len(o.Name) > len(prefix) && o.Name[:len(prefix)+1] == prefix+"-" {
			if _, err := a.DeleteOrg(ctx, o.ID); err != nil {
				return err
			}
			n++
		}
	}
	fmt.Printf("seed: deleted %d organizations named %s-*\n", n, prefix)
	return nil
}
