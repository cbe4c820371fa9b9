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

// createdOrgAdminKey is what org-admin-key create prints with --json: the
// only time the key is shown.
type createdOrgAdminKey struct {
	store.OrgAdminKey
	Key string `json:"key"`
}

// orgAdminKeyCmd manages organization admin keys on the store functions
// the admin API runs (POST /admin/v1/organizations/{id}/admin-keys and
// friends): one implementation of each action.
func orgAdminKeyCmd(ctx context.Context, e env, args []string) error {
	if len(args) == 0 {
		return errors.New("usage: bulkhead org-admin-key create|list|revoke")
	}
	switch sub, args := args[0], args[1:]; sub {
	case "create":
		return orgAdminKeyCreate(ctx, e, args)
	case "list":
		return orgAdminKeyList(ctx, e, args)
	case "revoke":
		return orgAdminKeyRevoke(ctx, e, args)
	default:
		return fmt.Errorf("unknown org-admin-key command %q: want create, list or revoke", sub)
	}
}

func orgAdminKeyCreate(ctx context.Context, e env, args []string) error {
	fs, path := flags(e, "org-admin-key create")
	org := fs.String("org", "", "organization `id` the key administers (required)")
	name := fs.String("name", "", "who or what holds the key (required)")
	expires := fs.Duration("expires", 0, "lifetime, e.g. 720h (0: until revoked)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	var problems []string
	orgID := orgFlag(*org, &problems)
	if orgID == nil && *org == "" {
		problems = append(problems, "--org is required")
	}
	if strings.TrimSpace(*name) == "" || len(*name) > 200 {
		problems = append(problems, "--name is required (at most 200 bytes)")
	}
	if *expires < 0 {
		problems = append(problems, fmt.Sprintf("--expires must not be negative, got %s", *expires))
	}
	if len(problems) > 0 {
		return errors.New("org-admin-key create: " + strings.Join(problems, "; "))
	}
	var exp *time.Time
	if *expires > 0 {
		t := time.Now().Add(*expires).UTC()
		exp = &t
	}
	return withAdmin(ctx, e, *path, func(ctx context.Context, a *store.Admin) error {
		key, hash, display := control.NewOrgAdminKey(*orgID)
		k, err := a.CreateOrgAdminKey(ctx, *orgID, *name, hash, display, exp)
		if errors.Is(err, store.ErrNoOrganization) {
			return fmt.Errorf("org-admin-key create: no organization %s", orgID)
		}
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(e, createdOrgAdminKey{k, key})
		}
		fmt.Fprintln(e.stdout, key)
		fmt.Fprintf(e.stderr, "admin key %s (%s) of organization %s.\nThis is the only time the key is shown: store it now.\n", k.ID, k.Name, k.OrgID)
		return nil
	})
}

func orgAdminKeyList(ctx context.Context, e env, args []string) error {
	fs, path := flags(e, "org-admin-key list")
	org := fs.String("org", "", "organization `id` (required)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	var problems []string
	orgID := orgFlag(*org, &problems)
	if *org == "" {
		problems = append(problems, "--org is required")
	}
	if len(problems) > 0 {
		return errors.New("org-admin-key list: " + strings.Join(problems, "; "))
	}
	return withAdmin(ctx, e, *path, func(ctx context.Context, a *store.Admin) error {
		ks, err := a.OrgAdminKeys(ctx, *orgID)
		if err != nil {
			return err
		}
		if *asJSON {
			if ks == nil {
				ks = []store.OrgAdminKey{}
			}
			return printJSON(e, ks)
		}
		ts := func(t *time.Time) string {
			if t == nil {
				return "-"
			}
			return t.UTC().Format(time.RFC3339)
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tPREFIX\tEXPIRES\tREVOKED\tCREATED")
		for _, k := range ks {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Name, k.DisplayPrefix, ts(k.ExpiresAt), ts(k.RevokedAt), ts(&k.CreatedAt))
		}
		return tw.Flush()
	})
}

func orgAdminKeyRevoke(ctx context.Context, e env, args []string) error {
	fs, path := flags(e, "org-admin-key revoke")
	id, err := parseOneID(fs, args, "usage: bulkhead org-admin-key revoke ID")
	if err != nil {
		return err
	}
	return withAdmin(ctx, e, *path, func(ctx context.Context, a *store.Admin) error {
		k, err := a.RevokeOrgAdminKey(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("org-admin-key revoke: no admin key %s", id)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "revoked admin key %s (%s) of organization %s at %s\n", k.ID, k.Name, k.OrgID, k.RevokedAt.UTC().Format(time.RFC3339))
		return nil
	})
}
