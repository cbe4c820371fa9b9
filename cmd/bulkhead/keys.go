package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/bulkheadhq/bulkhead/config"
	"github.com/bulkheadhq/bulkhead/gateway/apikey"
	"github.com/bulkheadhq/bulkhead/gateway/auth"
	"github.com/bulkheadhq/bulkhead/store"
)

// createdKey is what key create and key rotate print with --json: the only
// time the key itself is ever shown.
type createdKey struct {
	ID                 uuid.UUID  `json:"id"`
	OrganizationID     uuid.UUID  `json:"organization_id"`
	Key                string     `json:"key"`
	Name               string     `json:"name"`
	DisplayPrefix      string     `json:"display_prefix"`
	RateLimitPerMinute int        `json:"rate_limit_per_minute"`
	TokensPerMinute    int        `json:"tokens_per_minute,omitempty"`
	ExpiresAt          *time.Time `json:"expires_at,omitempty"`
	Replaces           *uuid.UUID `json:"replaces,omitempty"`
	ReplacedExpiresAt  *time.Time `json:"replaced_expires_at,omitempty"`
}

func keyCmd(ctx context.Context, e env, args []string) error {
	if len(args) == 0 {
		return errors.New("usage: bulkhead key create|list|update|revoke|rotate")
	}
	switch sub, args := args[0], args[1:]; sub {
	case "create":
		return keyCreate(ctx, e, args)
	case "list":
		return keyList(ctx, e, args)
	case "revoke":
		return keyRevoke(ctx, e, args)
	case "rotate":
		return keyRotate(ctx, e, args)
	case "update":
		return keyUpdate(ctx, e, args)
	default:
		return fmt.Errorf("unknown key command %q: want create, list, update, revoke or rotate", sub)
	}
}

func keyCreate(ctx context.Context, e env, args []string) error {
	fs, path := flags(e, "key create")
	orgFlag := fs.String("org", "", "organization `id` (required)")
	name := fs.String("name", "", "key name (required)")
	rpm := fs.Int("rpm", 0, "requests per minute (required, at least 1)")
	tpm := fs.Int("tpm", 0, "tokens per minute (0: no token limit)")
	expires := fs.Duration("expires", 0, "lifetime, e.g. 720h (0: never expires)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	org, err := parseID("--org", *orgFlag)
	var problems []string
	if err != nil {
		problems = append(problems, err.Error())
	}
	if strings.TrimSpace(*name) == "" {
		problems = append(problems, "--name is required")
	}
	if *rpm < 1 {
		problems = append(problems, fmt.Sprintf("--rpm must be at least 1, got %d", *rpm))
	}
	if *tpm < 0 {
		problems = append(problems, fmt.Sprintf("--tpm must not be negative, got %d", *tpm))
	}
	if *expires < 0 {
		problems = append(problems, fmt.Sprintf("--expires must not be negative, got %s", *expires))
	}
	if len(problems) > 0 {
		return errors.New("key create: " + strings.Join(problems, "; "))
	}
	var exp *time.Time
	if *expires > 0 {
		t := time.Now().Add(*expires).UTC()
		exp = &t
	}
	return withAdmin(ctx, e, *path, func(ctx context.Context, a *store.Admin) error {
		key, err := apikey.Generate(org)
		if err != nil {
			return err
		}
		k, err := a.CreateKey(ctx, store.NewKey{
			OrgID: org, Hash: apikey.Hash([]byte(key)), DisplayPrefix: apikey.Display(key),
			Name: *name, RateLimitPerMinute: *rpm, TokensPerMinute: *tpm, ExpiresAt: exp,
		})
		if errors.Is(err, store.ErrNoOrganization) {
			return fmt.Errorf("key create: no organization %s", org)
		}
		if err != nil {
			return err
		}
		return printCreated(e, *asJSON, key, k, nil)
	})
}

// printCreated shows a new key once: alone on stdout (so that
// KEY=$(bulkhead key create ...) works), details on stderr; or as JSON.
func printCreated(e env, asJSON bool, key string, k store.Key, replaced *store.Key) error {
	out := createdKey{
		ID: k.ID, OrganizationID: k.OrgID, Key: key, Name: k.Name, DisplayPrefix: k.DisplayPrefix,
		RateLimitPerMinute: k.RateLimitPerMinute, TokensPerMinute: k.TokensPerMinute, ExpiresAt: k.ExpiresAt,
	}
	if replaced != nil {
		out.Replaces, out.ReplacedExpiresAt = &replaced.ID, replaced.ExpiresAt
	}
	if asJSON {
		return printJSON(e, out)
	}
	fmt.Fprintln(e.stdout, key)
	fmt.Fprintf(e.stderr, "key %s (%s) for organization %s, %d requests/min", k.ID, k.DisplayPrefix, k.OrgID, k.RateLimitPerMinute)
	if k.TokensPerMinute > 0 {
		fmt.Fprintf(e.stderr, ", %d tokens/min", k.TokensPerMinute)
	}
	if k.ExpiresAt != nil {
		fmt.Fprintf(e.stderr, ", expires %s", k.ExpiresAt.UTC().Format(time.RFC3339))
	}
	fmt.Fprintln(e.stderr, ".\nThis is the only time the key is shown: store it now.")
	if replaced != nil && replaced.ExpiresAt != nil {
		fmt.Fprintf(e.stderr, "The old key %s keeps working until %s.\n", replaced.ID, replaced.ExpiresAt.UTC().Format(time.RFC3339))
	}
	return nil
}

func keyList(ctx context.Context, e env, args []string) error {
	fs, path := flags(e, "key list")
	orgFlag := fs.String("org", "", "organization `id` (required)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	org, err := parseID("--org", *orgFlag)
	if err != nil {
		return fmt.Errorf("key list: %w", err)
	}
	return withAdmin(ctx, e, *path, func(ctx context.Context, a *store.Admin) error {
		keys, err := a.Keys(ctx, org)
		if errors.Is(err, store.ErrNoOrganization) {
			return fmt.Errorf("key list: no organization %s", org)
		}
		if err != nil {
			return err
		}
		if *asJSON {
			if keys == nil {
				keys = []store.Key{}
			}
			return printJSON(e, keys)
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tKEY\tRPM\tTPM\tEXPIRES\tREVOKED\tCREATED")
		ts := func(t *time.Time) string {
			if t == nil {
				return "-"
			}
			return t.UTC().Format(time.RFC3339)
		}
		for _, k := range keys {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", k.ID, k.Name, k.DisplayPrefix, k.RateLimitPerMinute,
				k.TokensPerMinute, ts(k.ExpiresAt), ts(k.RevokedAt), ts(&k.CreatedAt))
		}
		return tw.Flush()
	})
}

func keyRevoke(ctx context.Context, e env, args []string) error {
	fs, path := flags(e, "key revoke")
	id, err := parseOneID(fs, args, "usage: bulkhead key revoke ID")
	if err != nil {
		return err
	}
	return withAdminConfig(ctx, e, *path, func(ctx context.Context, a *store.Admin, cfg config.Config) error {
		k, err := a.RevokeKey(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("key revoke: no key %s", id)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "revoked key %s (%s) at %s\n", k.ID, k.DisplayPrefix, k.RevokedAt.UTC().Format(time.RFC3339))
		return tellInstances(ctx, cfg, func(rdb redis.UniversalClient) error {
			return auth.Revoke(ctx, rdb, cfg.AuthRedisTTL, k.Hash)
		})
	})
}

// keyUpdate changes a key's limits; running gateways apply them at once
// (the key's cache entries are invalidated), no restart needed.
func keyUpdate(ctx context.Context, e env, args []string) error {
	fs, path := flags(e, "key update")
	rpm := fs.Int("rpm", -1, "new requests per minute (at least 1)")
	tpm := fs.Int("tpm", -1, "new tokens per minute (0 removes the token limit)")
	id, err := parseOneID(fs, args, "usage: bulkhead key update ID [--rpm N] [--tpm N]")
	if err != nil {
		return err
	}
	var rp, tp *int
	var problems []string
	if *rpm != -1 {
		if *rpm < 1 {
			problems = append(problems, fmt.Sprintf("--rpm must be at least 1, got %d", *rpm))
		}
		rp = rpm
	}
	if *tpm != -1 {
		if *tpm < 0 {
			problems = append(problems, fmt.Sprintf("--tpm must not be negative, got %d", *tpm))
		}
		tp = tpm
	}
	if rp == nil && tp == nil {
		problems = append(problems, "nothing to change: give --rpm and/or --tpm")
	}
	if len(problems) > 0 {
		return errors.New("key update: " + strings.Join(problems, "; "))
	}
	return withAdminConfig(ctx, e, *path, func(ctx context.Context, a *store.Admin, cfg config.Config) error {
		k, err := a.UpdateKeyLimits(ctx, id, rp, tp)
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("key update: no key %s", id)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "key %s (%s): %d requests/min, %d tokens/min (0: none)\n", k.ID, k.DisplayPrefix, k.RateLimitPerMinute, k.TokensPerMinute)
		return tellInstances(ctx, cfg, func(rdb redis.UniversalClient) error { return auth.Invalidate(ctx, rdb, k.Hash) })
	})
}

func keyRotate(ctx context.Context, e env, args []string) error {
	fs, path := flags(e, "key rotate")
	overlap := fs.Duration("overlap", time.Hour, "how long the old key keeps working (0: stops now)")
	asJSON := fs.Bool("json", false, "print JSON")
	id, err := parseOneID(fs, args, "usage: bulkhead key rotate ID [--overlap DURATION]")
	if err != nil {
		return err
	}
	if *overlap < 0 {
		return fmt.Errorf("key rotate: --overlap must not be negative, got %s", *overlap)
	}
	return withAdminConfig(ctx, e, *path, func(ctx context.Context, a *store.Admin, cfg config.Config) error {
		org, err := a.KeyOrg(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("key rotate: no key %s", id)
		}
		if err != nil {
			return err
		}
		key, err := apikey.Generate(org)
		if err != nil {
			return err
		}
		old, created, err := a.RotateKey(ctx, id, *overlap, store.NewKey{Hash: apikey.Hash([]byte(key)), DisplayPrefix: apikey.Display(key)})
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("key rotate: key %s is revoked or expired", id)
		}
		if err != nil {
			return err
		}
		if err := printCreated(e, *asJSON, key, created, &old); err != nil {
			return err
		}
		// Instances must learn the old key's new expiry.
		return tellInstances(ctx, cfg, func(rdb redis.UniversalClient) error {
			return auth.Invalidate(ctx, rdb, old.Hash)
		})
	})
}

// tellInstances runs fn against the shared Redis so that running gateways
// drop what they cached. The database change has already committed: on
// failure the error says so, and that instances catch up within the L1 TTL.
func tellInstances(ctx context.Context, cfg config.Config, fn func(redis.UniversalClient) error) error {
	if cfg.RedisURL == "" {
		return nil // single-instance mode: the L1 TTL bounds staleness
	}
	routeRedisLog(zap.NewNop()) // an operator's terminal gets the command's own errors only
	rdb, err := newRedis(cfg)
	if err == nil {
		err = fn(rdb)
		rdb.Close()
	}
	if err != nil {
		return fmt.Errorf("the change is saved, but running gateways could not be told through Redis (%w); "+
			"they pick it up within %s (BULKHEAD_AUTH_CACHE_TTL), or run the command again", err, cfg.AuthCacheTTL)
	}
	return nil
}

func parseID(flagName, s string) (uuid.UUID, error) {
	if s == "" {
		return uuid.Nil, fmt.Errorf("%s is required", flagName)
	}
	id, err := uuid.Parse(s)
	if err != nil || len(s) != 36 {
		return uuid.Nil, fmt.Errorf("%s: %q is not an id (a UUID)", flagName, s)
	}
	return id, nil
}

// parseOneID parses flags around exactly one positional id.
func parseOneID(fs *flag.FlagSet, args []string, usage string) (uuid.UUID, error) {
	// Accept the id before or after the flags.
	var pos []string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			return uuid.Nil, err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) != 1 {
		return uuid.Nil, errors.New(usage)
	}
	return parseID("ID", pos[0])
}
