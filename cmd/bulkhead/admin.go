package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/user"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/bulkheadhq/bulkhead/config"
	"github.com/bulkheadhq/bulkhead/gateway/apikey"
	"github.com/bulkheadhq/bulkhead/gateway/auth"
	"github.com/bulkheadhq/bulkhead/store"
)

// adminTimeout bounds every admin subcommand's database work.
const adminTimeout = 30 * time.Second

func migrateCmd(ctx context.Context, e env, args []string) error {
	if len(args) > 0 && args[0] == "status" {
		return migrateStatus(ctx, e, args[1:])
	}
	fs, path := flags(e, "migrate")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loadConfig(e, *path)
	if err != nil {
		return err
	}
	// No deadline: a migration that rewrites rows or builds an index takes
	// as long as the table is large (README: Upgrading to 00008).
	// Interrupting stops it; every migration can be run again.
	applied, err := store.Migrate(ctx, cfg.AdminDatabaseURL.Reveal())
	if err != nil {
		return err
	}
	if len(applied) == 0 {
		fmt.Fprintln(e.stdout, "schema is up to date")
	} else {
		fmt.Fprintf(e.stdout, "applied migrations %v\n", applied)
	}
	// Then the data plane, in every place (each failure names its place;
	// the other places are migrated all the same).
	places, err := store.MigratePlaces(ctx, cfg.AdminDatabaseURL.Reveal(), cfg.Targets())
	for _, p := range places {
		if len(p.Applied) > 0 {
			fmt.Fprintf(e.stdout, "data plane of %s: applied %v\n", p.Place, p.Applied)
		}
	}
	if err != nil {
		return err
	}
	a, err := store.OpenAdmin(ctx, cfg.AdminDatabaseURL.Reveal(), actor())
	if err != nil {
		return err
	}
	defer a.Close()
	_, err = recordRetention(ctx, e, a, cfg)
	return err
}

// migrateStatus prints each place's data-plane version.
func migrateStatus(ctx context.Context, e env, args []string) error {
	fs, path := flags(e, "migrate status")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(e, *path)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	main, err := store.MigrationVersion(ctx, cfg.AdminDatabaseURL.Reveal())
	if err != nil {
		return err
	}
	places, perr := store.PlacesStatus(ctx, cfg.AdminDatabaseURL.Reveal(), cfg.Targets())
	if *asJSON {
		if err := printJSON(e, map[string]any{"control_plane": main, "places": places}); err != nil {
			return err
		}
		return perr
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PLACE\tVERSION\tLATEST\tERROR")
	fmt.Fprintf(tw, "control plane\t%d\t%d\t\n", main.Version, main.Latest)
	for _, p := range places {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", p.Place, p.Version, p.Latest, p.Error)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return perr
}

// withAdmin loads the configuration and runs fn with an owner connection.
func withAdmin(ctx context.Context, e env, path string, fn func(ctx context.Context, a *store.Admin) error) error {
	return withAdminConfig(ctx, e, path, func(ctx context.Context, a *store.Admin, _ config.Config) error { return fn(ctx, a) })
}

// withAdminConfig is withAdmin for commands that also need the configuration.
func withAdminConfig(ctx context.Context, e env, path string, fn func(ctx context.Context, a *store.Admin, cfg config.Config) error) error {
	cfg, err := loadConfig(e, path)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	a, err := store.OpenAdmin(ctx, cfg.AdminDatabaseURL.Reveal(), actor())
	if err != nil {
		return err
	}
	defer a.Close()
	a.UseTargets(cfg.Targets())
	return fn(ctx, a, cfg)
}

// actor names the operator in audit rows.
func actor() string {
	if u, err := user.Current(); err == nil {
		return "cli:" + u.Username
	}
	return "cli:" + fmt.Sprint(os.Getuid())
}

func orgCmd(ctx context.Context, e env, args []string) error {
	if len(args) == 0 {
		return errors.New("usage: bulkhead org create|list|update|rekey|delete|move")
	}
	switch sub, args := args[0], args[1:]; sub {
	case "create":
		return orgCreate(ctx, e, args)
	case "list":
		return orgList(ctx, e, args)
	case "update":
		return orgUpdate(ctx, e, args)
	case "rekey":
		return orgRekey(ctx, e, args)
	case "delete":
		return orgDelete(ctx, e, args)
	case "move":
		return orgMove(ctx, e, args)
	default:
		return fmt.Errorf("unknown org command %q: want create, list, update, rekey, delete or move", sub)
	}
}

func orgCreate(ctx context.Context, e env, args []string) error {
	fs, path := flags(e, "org create")
	name := fs.String("name", "", "organization name (required)")
	capture := fs.String("capture", store.CaptureFull, "request log capture: full (prompt and response text) or metadata (no text)")
	sealFlag := fs.String("seal", "", "on: store its prompt and response text encrypted under its own data key; off: in clear (default: on when a key-encryption key is configured)")
	placementFlag := fs.String("placement", store.PlaceShared, "where its request log lives: shared (the shared tables), schema (a schema of its own in the main database) or database:NAME (a database target of database_targets)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	sealed, err := parseSeal(*sealFlag)
	if err != nil {
		return fmt.Errorf("org create: %w", err)
	}
	placement, err := store.ParsePlacement(*placementFlag)
	if err != nil {
		return fmt.Errorf("org create: --placement: %w", err)
	}
	if strings.TrimSpace(*name) == "" {
		return errors.New("org create: --name is required")
	}
	if !store.ValidCaptureMode(*capture) {
		return fmt.Errorf("org create: --capture must be full or metadata, got %q", *capture)
	}
	return withAdminConfig(ctx, e, *path, func(ctx context.Context, a *store.Admin, cfg config.Config) error {
		haveKEK, err := useKEK(ctx, a, cfg, sealed != nil && *sealed)
		if err != nil {
			return fmt.Errorf("org create --seal on: %w", err)
		}
		org, _, err := a.CreateOrgPlaced(ctx, store.NewOrg{Name: *name, Capture: *capture,
			Sealed: haveKEK && (sealed == nil || *sealed), Placement: placement}, store.Idempotency{})
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(e, org)
		}
		fmt.Fprintln(e.stdout, org.ID)
		return nil
	})
}

// retentionText shows an organization's retention: default, forever or
// N days.
func retentionText(days *int) string {
	if days == nil {
		return "default"
	}
	return store.Retention(*days).String()
}

func orgList(ctx context.Context, e env, args []string) error {
	fs, path := flags(e, "org list")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	return withAdmin(ctx, e, *path, func(ctx context.Context, a *store.Admin) error {
		orgs, err := a.Orgs(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(e, orgs)
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tCAPTURE\tRETENTION\tSEALED\tPLACEMENT\tCREATED")
		for _, o := range orgs {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\t%s\t%s\n", o.ID, o.Name, o.CaptureMode, retentionText(o.RetentionDays), o.Sealed, o.Placement, o.CreatedAt.UTC().Format(time.RFC3339))
		}
		return tw.Flush()
	})
}

func orgUpdate(ctx context.Context, e env, args []string) error {
	fs, path := flags(e, "org update")
	name := fs.String("name", "", "new name (empty: keep)")
	capture := fs.String("capture", "", "full or metadata (empty: keep)")
	retention := fs.String("retention", "", "how long its request log is kept: 30d (days), forever, or default (the installation's, BULKHEAD_RETENTION); empty: keep")
	sealFlag := fs.String("seal", "", "on or off: store its new rows' text encrypted or in clear (rows already stored keep their form); empty: keep")
	asJSON := fs.Bool("json", false, "print JSON")
	id, err := parseOneID(fs, args, "usage: bulkhead org update ID [--name NAME] [--capture full|metadata] [--retention 30d|forever|default] [--seal on|off]")
	if err != nil {
		return err
	}
	sealed, err := parseSeal(*sealFlag)
	if err != nil {
		return fmt.Errorf("org update: %w", err)
	}
	if *capture != "" && !store.ValidCaptureMode(*capture) {
		return fmt.Errorf("org update: --capture must be full or metadata, got %q", *capture)
	}
	changes := store.OrgChanges{Name: *name, Capture: *capture, Seal: sealed}
	switch *retention {
	case "":
	case "default":
		r := store.InheritRetention
		changes.Retention = &r
	default:
		r, err := store.ParseRetention(*retention)
		if err != nil {
			return fmt.Errorf("org update: --retention: %w", err)
		}
		changes.Retention = &r
	}
	if *name == "" && *capture == "" && changes.Retention == nil && sealed == nil {
		return errors.New("org update: nothing to change: give --name, --capture, --retention and/or --seal")
	}
	return withAdminConfig(ctx, e, *path, func(ctx context.Context, a *store.Admin, cfg config.Config) error {
		if _, err := useKEK(ctx, a, cfg, sealed != nil && *sealed); err != nil {
			return fmt.Errorf("org update --seal on: %w", err)
		}
		org, err := a.UpdateOrg(ctx, id, changes)
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("org update: no organization %s", id)
		}
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(e, org)
		}
		fmt.Fprintf(e.stdout, "organization %s: name %q, capture %s, retention %s, sealed %v\n", org.ID, org.Name, org.CaptureMode, retentionText(org.RetentionDays), org.Sealed)
		return nil
	})
}

// orgDelete deletes an organization with all its data, then tells the
// running gateways to forget its keys.
func orgDelete(ctx context.Context, e env, args []string) error {
	fs, path := flags(e, "org delete")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: bulkhead org delete ID")
	}
	id, err := uuid.Parse(fs.Arg(0))
	if err != nil {
		return fmt.Errorf("org delete: %q is not an organization id (a UUID)", fs.Arg(0))
	}
	return withAdminConfig(ctx, e, *path, func(ctx context.Context, a *store.Admin, cfg config.Config) error {
		hashes, err := a.DeleteOrg(ctx, id)
		if err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("org delete: no organization %s", id)
			}
			return err
		}
		fmt.Fprintf(e.stdout, "deleted organization %s and all its data (%d keys); its data keys were destroyed first, so copies of its sealed rows are unreadable (backups that also hold organization_keys: once the key-encryption key is rotated)\n", id, len(hashes))
		return tellInstances(ctx, cfg, func(rdb redis.UniversalClient) error {
			if err := auth.Revoke(ctx, rdb, cfg.AuthRedisTTL, hashes...); err != nil {
				return err
			}
			return auth.InvalidateOrg(ctx, rdb, id)
		})
	})
}

// demoOrgName is the organization `bulkhead demo` (and so `make run`) ensures.
const demoOrgName = "demo"

// demoCmd ensures the demo organization, gives it a fresh key (keys are
// shown only once, so each run makes one), and prints how to call the
// gateway with it.
func demoCmd(ctx context.Context, e env, args []string) error {
	fs, path := flags(e, "demo")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	return withAdminConfig(ctx, e, *path, func(ctx context.Context, a *store.Admin, cfg config.Config) error {
		org, err := a.OrgByName(ctx, demoOrgName)
		if errors.Is(err, store.ErrNotFound) {
			org, err = a.CreateOrg(ctx, demoOrgName)
		}
		if err != nil {
			return err
		}
		key, err := apikey.Generate(org.ID)
		if err != nil {
			return err
		}
		if _, err := a.CreateKey(ctx, store.NewKey{
			OrgID: org.ID, Hash: apikey.Hash([]byte(key)), DisplayPrefix: apikey.Display(key),
			Name: "demo " + time.Now().UTC().Format(time.RFC3339), RateLimitPerMinute: 600, TokensPerMinute: 200_000,
		}); err != nil {
			return err
		}
		base := "http://" + strings.Replace(cfg.Listen, ":", "localhost:", 1)
		if !strings.HasPrefix(cfg.Listen, ":") {
			base = "http://" + cfg.Listen
		}
		fmt.Fprintf(e.stdout, `
  demo organization   %s
  demo API key        %s   (600 requests/min, 200k tokens/min; shown once)
  OpenAI base URL     %s/v1

  curl -s %s/v1/chat/completions \
    -H "Authorization: Bearer %s" \
    -H "Content-Type: application/json" \
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}]}'

`, org.ID, key, base, base, key)
		return nil
	})
}

func parseNoArgs(fs interface {
	Parse([]string) error
	NArg() int
	Args() []string
}, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return nil
}

func printJSON(e env, v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
