package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/bulkheadhq/bulkhead/gateway/control"
	"github.com/bulkheadhq/bulkhead/store"
)

// createdToken is what admin-token create prints with --json: the only
// time the token is shown.
type createdToken struct {
	store.AdminToken
	Token string `json:"token"`
}

func adminTokenCmd(ctx context.Context, e env, args []string) error {
	if len(args) == 0 {
		return errors.New("usage: bulkhead admin-token create|list|revoke")
	}
	switch sub, args := args[0], args[1:]; sub {
	case "create":
		return adminTokenCreate(ctx, e, args)
	case "list":
		return adminTokenList(ctx, e, args)
	case "revoke":
		return adminTokenRevoke(ctx, e, args)
	default:
		return fmt.Errorf("unknown admin-token command %q: want create, list or revoke", sub)
	}
}

func adminTokenCreate(ctx context.Context, e env, args []string) error {
	fs, path := flags(e, "admin-token create")
	name := fs.String("name", "", "who or what holds the token (required)")
	scope := fs.String("scope", store.ScopeRead, "read (every GET of the admin API) or write (and every change)")
	expires := fs.Duration("expires", 0, "lifetime, e.g. 720h (0: until revoked)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	var problems []string
	if strings.TrimSpace(*name) == "" {
		problems = append(problems, "--name is required")
	}
	if *scope != store.ScopeRead && *scope != store.ScopeWrite {
		problems = append(problems, fmt.Sprintf("--scope must be read or write, got %q", *scope))
	}
	if *expires < 0 {
		problems = append(problems, fmt.Sprintf("--expires must not be negative, got %s", *expires))
	}
	if len(problems) > 0 {
		return errors.New("admin-token create: " + strings.Join(problems, "; "))
	}
	var exp *time.Time
	if *expires > 0 {
		t := time.Now().Add(*expires).UTC()
		exp = &t
	}
	return withAdmin(ctx, e, *path, func(ctx context.Context, a *store.Admin) error {
		token, hash := control.NewOperatorToken()
		t, err := a.CreateAdminToken(ctx, *name, *scope, hash, exp)
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(e, createdToken{t, token})
		}
		fmt.Fprintln(e.stdout, token)
		fmt.Fprintf(e.stderr, "admin token %s (%s, scope %s).\nThis is the only time the token is shown: store it now.\n", t.ID, t.Name, t.Scope)
		return nil
	})
}

func adminTokenList(ctx context.Context, e env, args []string) error {
	fs, path := flags(e, "admin-token list")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	return withAdmin(ctx, e, *path, func(ctx context.Context, a *store.Admin) error {
		ts, err := a.AdminTokens(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			if ts == nil {
				ts = []store.AdminToken{}
			}
			return printJSON(e, ts)
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tSCOPE\tEXPIRES\tREVOKED\tCREATED")
		ts2 := func(t *time.Time) string {
			if t == nil {
				return "-"
			}
			return t.UTC().Format(time.RFC3339)
		}
		for _, t := range ts {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.Name, t.Scope, ts2(t.ExpiresAt), ts2(t.RevokedAt), ts2(&t.CreatedAt))
		}
		return tw.Flush()
	})
}

func adminTokenRevoke(ctx context.Context, e env, args []string) error {
	fs, path := flags(e, "admin-token revoke")
	id, err := parseOneID(fs, args, "usage: bulkhead admin-token revoke ID")
	if err != nil {
		return err
	}
	return withAdmin(ctx, e, *path, func(ctx context.Context, a *store.Admin) error {
		t, err := a.RevokeAdminToken(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("admin-token revoke: no token %s", id)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "revoked admin token %s (%s) at %s\n", t.ID, t.Name, t.RevokedAt.UTC().Format(time.RFC3339))
		return nil
	})
}
