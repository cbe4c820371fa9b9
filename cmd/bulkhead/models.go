package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/bulkheadhq/bulkhead/config"
	"github.com/bulkheadhq/bulkhead/gateway/catalog"
	"github.com/bulkheadhq/bulkhead/store"
)

func modelCmd(ctx context.Context, e env, args []string) error {
	if len(args) == 0 {
		return errors.New("usage: bulkhead model add|list|update|remove|grant|revoke")
	}
	switch sub, args := args[0], args[1:]; sub {
	case "add":
		return modelAdd(ctx, e, args)
	case "list":
		return modelList(ctx, e, args)
	case "update":
		return modelUpdate(ctx, e, args)
	case "remove":
		return modelRemove(ctx, e, args)
	case "grant", "revoke":
		return modelAccess(ctx, e, sub, args)
	default:
		return fmt.Errorf("unknown model command %q: want add, list, update, remove, grant or revoke", sub)
	}
}

// priceFlags are the three price flags, in US dollars per million tokens.
type priceFlags struct{ input, cached, output *string }

func addPriceFlags(fs *flag.FlagSet) priceFlags {
	return priceFlags{
		input:  fs.String("input-price", "", "US dollars per million input tokens, decimal text such as 0.15"),
		cached: fs.String("cached-input-price", "", "US dollars per million cached input tokens (add: default the input price)"),
		output: fs.String("output-price", "", "US dollars per million output tokens"),
	}
}

// parse reads the prices that are set (nil for those that are not),
// adding a problem for each bad one.
func (p priceFlags) parse(problems *[]string) (in, cached, out *store.MicroUSD) {
	read := func(flagName, s string) *store.MicroUSD {
		if s == "" {
			return nil
		}
		v, err := store.ParseUSD(s)
		if err == nil && v > store.MaxPrice {
			err = fmt.Errorf("%s is more than %s per million tokens", s, store.MaxPrice)
		}
		if err != nil {
			*problems = append(*problems, fmt.Sprintf("--%s: %v", flagName, err))
			return nil
		}
		return &v
	}
	return read("input-price", *p.input), read("cached-input-price", *p.cached), read("output-price", *p.output)
}

// orgFlag parses an optional --org: nil is the shared catalog.
func orgFlag(s string, problems *[]string) *uuid.UUID {
	if s == "" {
		return nil
	}
	id, err := parseID("--org", s)
	if err != nil {
		*problems = append(*problems, err.Error())
		return nil
	}
	return &id
}

// checkUpstream refuses a name no configured upstream has: the catalog
// routes by name, and credentials stay in the configuration.
func checkUpstream(cfg config.Config, name string) error {
	names := cfg.UpstreamNames()
	if slices.Contains(names, name) {
		return nil
	}
	return fmt.Errorf("--upstream %q is not a configured upstream (configured: %s)", name, strings.Join(names, ", "))
}

func modelAdd(ctx context.Context, e env, args []string) error {
	fs, path := flags(e, "model add")
	name := fs.String("name", "", "the model's public name, as requests give it (required)")
	upstream := fs.String("upstream", "", "name of the configured upstream serving it: default (BULKHEAD_UPSTREAM_URL) or one of upstreams (required)")
	prices := addPriceFlags(fs)
	org := fs.String("org", "", "organization `id` whose private model it is (empty: shared, for every organization access admits)")
	disabled := fs.Bool("disabled", false, "add it disabled (nonexistent to every caller until model update --enable)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	var problems []string
	if !store.ValidModelName(*name) {
		problems = append(problems, fmt.Sprintf("--name must be 1 to 256 bytes without control characters, got %q", *name))
	}
	if *upstream == "" {
		problems = append(problems, "--upstream is required")
	}
	in, cached, out := prices.parse(&problems)
	if *prices.input == "" || *prices.output == "" {
		problems = append(problems, "--input-price and --output-price are required")
	}
	orgID := orgFlag(*org, &problems)
	if len(problems) > 0 {
		return errors.New("model add: " + strings.Join(problems, "; "))
	}
	if cached == nil {
		cached = in
	}
	return withAdminConfig(ctx, e, *path, func(ctx context.Context, a *store.Admin, cfg config.Config) error {
		if err := checkUpstream(cfg, *upstream); err != nil {
			return fmt.Errorf("model add: %w", err)
		}
		m, err := a.AddModel(ctx, store.Model{OrgID: orgID, Name: *name, Upstream: *upstream,
			InputPrice: *in, CachedInputPrice: *cached, OutputPrice: *out, Enabled: !*disabled})
		if err != nil {
			return modelError("model add", store.ModelRef{Org: orgID, Name: *name}, err)
		}
		if err := printModel(e, *asJSON, "added", m); err != nil {
			return err
		}
		return tellCatalog(ctx, cfg, orgID)
	})
}

// modelError turns the store's sentinels into one line for the operator.
func modelError(cmd string, ref store.ModelRef, err error) error {
	switch {
	case errors.Is(err, store.ErrModelExists):
		return fmt.Errorf("%s: %s already exists", cmd, ref)
	case errors.Is(err, store.ErrNoOrganization):
		return fmt.Errorf("%s: no organization %s", cmd, ref.Org)
	case errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("%s: no %s", cmd, ref)
	}
	return err
}

func printModel(e env, asJSON bool, verb string, m store.Model) error {
	if asJSON {
		return printJSON(e, m)
	}
	scope := "shared"
	if m.OrgID != nil {
		scope = "organization " + m.OrgID.String()
	}
	fmt.Fprintf(e.stdout, "%s model %s (%s) on upstream %s: $%s input, $%s cached input, $%s output per million tokens, enabled %v\n",
		verb, m.Name, scope, m.Upstream, m.InputPrice, m.CachedInputPrice, m.OutputPrice, m.Enabled)
	return nil
}

func modelList(ctx context.Context, e env, args []string) error {
	fs, path := flags(e, "model list")
	org := fs.String("org", "", "organization `id`: the shared models and its own (empty: the whole catalog)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	var problems []string
	orgID := orgFlag(*org, &problems)
	if len(problems) > 0 {
		return errors.New("model list: " + strings.Join(problems, "; "))
	}
	return withAdmin(ctx, e, *path, func(ctx context.Context, a *store.Admin) error {
		ms, err := a.Models(ctx, orgID)
		if errors.Is(err, store.ErrNoOrganization) {
			return fmt.Errorf("model list: no organization %s", orgID)
		}
		if err != nil {
			return err
		}
		if *asJSON {
			if ms == nil {
				ms = []store.Model{}
			}
			return printJSON(e, ms)
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tORGANIZATION\tUPSTREAM\tINPUT\tCACHED\tOUTPUT\tENABLED\tUPDATED")
		for _, m := range ms {
			scope := "shared"
			if m.OrgID != nil {
				scope = m.OrgID.String()
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%v\t%s\n", m.Name, scope, m.Upstream, m.InputPrice, m.CachedInputPrice,
				m.OutputPrice, m.Enabled, m.UpdatedAt.UTC().Format(time.RFC3339))
		}
		return tw.Flush()
	})
}

func modelUpdate(ctx context.Context, e env, args []string) error {
	fs, path := flags(e, "model update")
	name := fs.String("name", "", "the model's name (required)")
	org := fs.String("org", "", "organization `id` of a private model (empty: the shared one)")
	upstream := fs.String("upstream", "", "new upstream name (empty: keep)")
	prices := addPriceFlags(fs)
	enable := fs.Bool("enable", false, "enable it")
	disable := fs.Bool("disable", false, "disable it: nonexistent to every caller")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	var problems []string
	if *name == "" {
		problems = append(problems, "--name is required")
	}
	orgID := orgFlag(*org, &problems)
	var c store.ModelChanges
	c.InputPrice, c.CachedInputPrice, c.OutputPrice = prices.parse(&problems)
	if *upstream != "" {
		c.Upstream = upstream
	}
	switch {
	case *enable && *disable:
		problems = append(problems, "--enable and --disable contradict each other")
	case *enable || *disable:
		c.Enabled = enable
	}
	if c == (store.ModelChanges{}) && len(problems) == 0 {
		problems = append(problems, "nothing to change: give --upstream, a price, --enable or --disable")
	}
	if len(problems) > 0 {
		return errors.New("model update: " + strings.Join(problems, "; "))
	}
	return withAdminConfig(ctx, e, *path, func(ctx context.Context, a *store.Admin, cfg config.Config) error {
		if c.Upstream != nil {
			if err := checkUpstream(cfg, *c.Upstream); err != nil {
				return fmt.Errorf("model update: %w", err)
			}
		}
		ref := store.ModelRef{Org: orgID, Name: *name}
		m, err := a.UpdateModel(ctx, ref, c)
		if err != nil {
			return modelError("model update", ref, err)
		}
		if err := printModel(e, *asJSON, "updated", m); err != nil {
			return err
		}
		return tellCatalog(ctx, cfg, orgID)
	})
}

func modelRemove(ctx context.Context, e env, args []string) error {
	fs, path := flags(e, "model remove")
	name := fs.String("name", "", "the model's name (required)")
	org := fs.String("org", "", "organization `id` of a private model (empty: the shared one)")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	var problems []string
	if *name == "" {
		problems = append(problems, "--name is required")
	}
	orgID := orgFlag(*org, &problems)
	if len(problems) > 0 {
		return errors.New("model remove: " + strings.Join(problems, "; "))
	}
	return withAdminConfig(ctx, e, *path, func(ctx context.Context, a *store.Admin, cfg config.Config) error {
		ref := store.ModelRef{Org: orgID, Name: *name}
		if _, err := a.RemoveModel(ctx, ref); err != nil {
			return modelError("model remove", ref, err)
		}
		fmt.Fprintf(e.stdout, "removed %s\n", ref)
		return tellCatalog(ctx, cfg, orgID)
	})
}

// modelAccess grants or revokes an organization's use of a shared model.
func modelAccess(ctx context.Context, e env, verb string, args []string) error {
	fs, path := flags(e, "model "+verb)
	org := fs.String("org", "", "organization `id` (required)")
	name := fs.String("model", "", "name of a shared model (required)")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	var problems []string
	orgID := orgFlag(*org, &problems)
	if *org == "" {
		problems = append(problems, "--org is required")
	}
	if *name == "" {
		problems = append(problems, "--model is required")
	}
	if len(problems) > 0 {
		return fmt.Errorf("model %s: %s", verb, strings.Join(problems, "; "))
	}
	return withAdminConfig(ctx, e, *path, func(ctx context.Context, a *store.Admin, cfg config.Config) error {
		err := a.SetModelAccess(ctx, *orgID, *name, verb == "grant")
		if err != nil {
			return modelError("model "+verb, store.ModelRef{Name: *name}, err)
		}
		done := map[string]string{"grant": "granted", "revoke": "revoked"}[verb]
		fmt.Fprintf(e.stdout, "%s shared model %s for organization %s\n", done, *name, orgID)
		return tellCatalog(ctx, cfg, orgID)
	})
}

// tellCatalog tells the running gateways that org's catalog (nil: the
// shared catalog, every organization's) changed. The change has already
// committed: on failure the error says so.
func tellCatalog(ctx context.Context, cfg config.Config, org *uuid.UUID) error {
	if cfg.RedisURL == "" {
		return nil // single-instance mode: BULKHEAD_MODEL_CACHE_TTL bounds staleness
	}
	routeRedisLog(zap.NewNop())
	rdb, err := newRedis(cfg)
	if err == nil {
		if org == nil {
			err = catalog.InvalidateShared(ctx, rdb)
		} else {
			err = catalog.InvalidateOrg(ctx, rdb, *org)
		}
		rdb.Close()
	}
	if err != nil {
		return fmt.Errorf("the change is saved, but running gateways could not be told through Redis (%w); "+
			"they pick it up within %s (BULKHEAD_MODEL_CACHE_TTL), or run the command again", err, cfg.ModelCacheTTL)
	}
	return nil
}
