package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/gateway/budget"
	"github.com/bulkheadhq/bulkhead/store"
)

func budgetCmd(ctx context.Context, e env, args []string) error {
	if len(args) == 0 {
		return errors.New("usage: bulkhead budget set|list|remove")
	}
	switch sub, args := args[0], args[1:]; sub {
	case "set":
		return budgetSet(ctx, e, args)
	case "list":
		return budgetList(ctx, e, args)
	case "remove":
		return budgetRemove(ctx, e, args)
	default:
		return fmt.Errorf("unknown budget command %q: want set, list or remove", sub)
	}
}

// scopeFlags name a budget: --org, and optionally --key and --user.
type scopeFlags struct{ org, key, user *string }

func addScopeFlags(fs *flag.FlagSet) scopeFlags {
	return scopeFlags{
		org:  fs.String("org", "", "organization `id` (required)"),
		key:  fs.String("key", "", "key `id`: a budget of this key alone"),
		user: fs.String("user", "", "end user: a budget of this end user alone (the JWT's user_id or the body's user)"),
	}
}

func (s scopeFlags) parse(problems *[]string) (org uuid.UUID, key *uuid.UUID, user *string) {
	if *s.org == "" {
		*problems = append(*problems, "--org is required")
	} else if id, err := parseID("--org", *s.org); err != nil {
		*problems = append(*problems, err.Error())
	} else {
		org = id
	}
	if *s.key != "" {
		if id, err := parseID("--key", *s.key); err != nil {
			*problems = append(*problems, err.Error())
		} else {
			key = &id
		}
	}
	if *s.user != "" {
		if !store.ValidEndUser(*s.user) {
			*problems = append(*problems, "--user must be 1 to 256 bytes without control characters")
		}
		user = s.user
	}
	return org, key, user
}

// parseAlerts reads --alert-at: fractions of the limit, comma-separated
// ("0.8,1.0"), each above 0 and at most 10, with at most three decimals.
func parseAlerts(s string) ([]int, error) {
	var out []int
	if s == "" {
		return out, nil
	}
	for _, f := range strings.Split(s, ",") {
		v, err := store.ParseUSD(strings.TrimSpace(f)) // the same exact decimal reading, in millionths
		if err != nil || v == 0 || v > 10_000_000 || v%1000 != 0 {
			return nil, fmt.Errorf("--alert-at: %q is not a fraction of the limit above 0 and at most 10 with at most 3 decimals (like 0.8)", f)
		}
		out = append(out, int(v/1000))
	}
	return out, nil
}

func budgetSet(ctx context.Context, e env, args []string) error {
	fs, path := flags(e, "budget set")
	scope := addScopeFlags(fs)
	usd := fs.String("usd", "", "the limit in US dollars, decimal text such as 25 or 0.50 (required, more than 0)")
	window := fs.String("window", "", "day or month (UTC calendar), or rolling:DURATION such as rolling:24h (required)")
	alerts := fs.String("alert-at", "", "soft thresholds as fractions of the limit, such as 0.8,1.0: each fires BULKHEAD_BUDGET_WEBHOOK_URL and a metric once per window")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	var problems []string
	org, key, user := scope.parse(&problems)
	limit, err := store.ParseUSD(*usd)
	switch {
	case *usd == "":
		problems = append(problems, "--usd is required")
	case err != nil:
		problems = append(problems, "--usd: "+err.Error())
	case limit == 0:
		problems = append(problems, "--usd must be more than 0 (remove the budget, or revoke the key, to stop spending)")
	case limit > store.MaxBudget:
		problems = append(problems, fmt.Sprintf("--usd: at most %s", store.MaxBudget))
	}
	w, err := store.ParseBudgetWindow(*window)
	if err != nil {
		problems = append(problems, "--window: "+err.Error())
	}
	at, err := parseAlerts(*alerts)
	if err != nil {
		problems = append(problems, err.Error())
	}
	if len(problems) > 0 {
		return errors.New("budget set: " + strings.Join(problems, "; "))
	}
	return withAdmin(ctx, e, *path, func(ctx context.Context, a *store.Admin) error {
		b, err := a.SetBudget(ctx, store.Budget{OrgID: org, KeyID: key, EndUser: user, Limit: limit, Window: w, AlertAt: at})
		if err != nil {
			return budgetError("budget set", err)
		}
		if *asJSON {
			return printJSON(e, b)
		}
		fmt.Fprintf(e.stdout, "set %s budget %s: $%s per %s (gateways apply it within %s)\n", b.Level(), b.ID, b.Limit, b.Window, budget.DefaultTTL)
		return nil
	})
}

func budgetError(cmd string, err error) error {
	switch {
	case errors.Is(err, store.ErrNoOrganization):
		return fmt.Errorf("%s: no such organization", cmd)
	case errors.Is(err, store.ErrNoKey):
		return fmt.Errorf("%s: the organization has no such key", cmd)
	case errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("%s: no such budget", cmd)
	}
	return fmt.Errorf("%s: %w", cmd, err)
}

func budgetList(ctx context.Context, e env, args []string) error {
	fs, path := flags(e, "budget list")
	org := fs.String("org", "", "organization `id` (empty: every organization's)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	var problems []string
	orgID := orgFlag(*org, &problems)
	if len(problems) > 0 {
		return errors.New("budget list: " + strings.Join(problems, "; "))
	}
	return withAdmin(ctx, e, *path, func(ctx context.Context, a *store.Admin) error {
		bs, err := a.Budgets(ctx, orgID)
		if err != nil {
			return budgetError("budget list", err)
		}
		if *asJSON {
			if bs == nil {
				bs = []store.Budget{}
			}
			return printJSON(e, bs)
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tORGANIZATION\tLEVEL\tKEY\tUSER\tUSD\tWINDOW\tALERT AT (‰)")
		for _, b := range bs {
			key, user := "-", "-"
			if b.KeyID != nil {
				key = b.KeyID.String()
			}
			if b.EndUser != nil {
				user = *b.EndUser
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%v\n", b.ID, b.OrgID, b.Level(), key, user, b.Limit, b.Window, b.AlertAt)
		}
		return tw.Flush()
	})
}

func budgetRemove(ctx context.Context, e env, args []string) error {
	fs, path := flags(e, "budget remove")
	scope := addScopeFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	var problems []string
	org, key, user := scope.parse(&problems)
	if len(problems) > 0 {
		return errors.New("budget remove: " + strings.Join(problems, "; "))
	}
	return withAdmin(ctx, e, *path, func(ctx context.Context, a *store.Admin) error {
		b, err := a.RemoveBudget(ctx, org, key, user)
		if err != nil {
			return budgetError("budget remove", err)
		}
		if *asJSON {
			return printJSON(e, b)
		}
		fmt.Fprintf(e.stdout, "removed %s budget %s\n", b.Level(), b.ID)
		return nil
	})
}
