package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/bulkheadhq/bulkhead/config"
	"github.com/bulkheadhq/bulkhead/store"
)

// retentionCmd: bulkhead retention run.
func retentionCmd(ctx context.Context, e env, args []string) error {
	if len(args) == 0 || args[0] != "run" {
		return errors.New("usage: bulkhead retention run [--json]: record BULKHEAD_RETENTION as the default, then remove what is due")
	}
	fs, path := flags(e, "retention run")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseNoArgs(fs, args[1:]); err != nil {
		return err
	}
	cfg, err := loadConfig(e, *path)
	if err != nil {
		return err
	}
	// No deadline: the first run on a large log deletes for as long as
	// there is something due, in steps; interrupting it is safe.
	a, err := store.OpenAdmin(ctx, cfg.AdminDatabaseURL.Reveal(), actor())
	if err != nil {
		return err
	}
	defer a.Close()
	def, err := recordRetention(ctx, e, a, cfg)
	if err != nil {
		return err
	}
	res, err := a.ApplyRetention(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(e, struct {
			Default string `json:"default_retention"`
			store.RetentionResult
		}{def.String(), res})
	}
	fmt.Fprintf(e.stdout, "retention (default %s): %d day partitions dropped, %d rows deleted\n", def, res.PartitionsDropped, res.RowsDeleted)
	return nil
}

// recordRetention makes BULKHEAD_RETENTION the installation's default
// retention in the database (where the gateways read it) and says so
// when it changes.
func recordRetention(ctx context.Context, e env, a *store.Admin, cfg config.Config) (store.Retention, error) {
	def, err := store.ParseRetention(cfg.Retention) // validated by Load
	if err != nil {
		return 0, err
	}
	changed, err := a.SetDefaultRetention(ctx, def)
	if err != nil {
		return 0, err
	}
	if changed {
		fmt.Fprintf(e.stdout, "default retention is now %s (BULKHEAD_RETENTION)\n", def)
	}
	return def, nil
}
