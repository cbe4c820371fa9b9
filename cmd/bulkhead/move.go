package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/bulkheadhq/bulkhead/gateway/auth"
	"github.com/bulkheadhq/bulkhead/store"
)

// orgMove moves an organization's data plane to another placement while
// it keeps serving (store.Admin.MoveOrg), or finishes a move cut short
// (--resume). It prints each step; the state machine is in store/move.go
// and the README's placement section.
func orgMove(ctx context.Context, e env, args []string) error {
	const usage = "usage: bulkhead org move ID --to shared|schema|database:NAME | bulkhead org move ID --resume"
	// The id may come first (`org move ID --to X`): flags after it.
	var idArg string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		idArg, args = args[0], args[1:]
	}
	fs, path := flags(e, "org move")
	toFlag := fs.String("to", "", "the placement to move to: shared, schema or database:NAME")
	resume := fs.Bool("resume", false, "finish the move in progress from its last recorded step")
	grace := fs.Duration("grace", store.DefaultMoveGrace, "how long to wait after the hold and after the cut-over for every gateway to see them (at least the placement cache's 10s plus a write's timeout)")
	batch := fs.Int("batch", 5000, "rows copied per transaction")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if idArg == "" && fs.NArg() == 1 {
		idArg = fs.Arg(0)
	} else if fs.NArg() != 0 || idArg == "" {
		return errors.New(usage)
	}
	id, err := uuid.Parse(idArg)
	if err != nil {
		return fmt.Errorf("org move: %q is not an organization id (a UUID)", idArg)
	}
	var to store.Placement
	switch {
	case *resume && *toFlag != "":
		return errors.New("org move: --resume takes no --to (the move in progress knows its destination)")
	case !*resume && *toFlag == "":
		return errors.New(usage)
	case !*resume:
		if to, err = store.ParsePlacement(*toFlag); err != nil {
			return fmt.Errorf("org move: --to: %w", err)
		}
	}
	if *grace <= 0 || *batch <= 0 {
		return errors.New("org move: --grace and --batch must be positive")
	}
	cfg, err := loadConfig(e, *path)
	if err != nil {
		return err
	}
	a, err := store.OpenAdmin(ctx, cfg.AdminDatabaseURL.Reveal(), actor())
	if err != nil {
		return err
	}
	defer a.Close()
	a.UseTargets(cfg.Targets())
	opts := store.MoveOptions{
		Grace: *grace, BatchSize: *batch,
		Progress: func(step string) {
			fmt.Fprintf(e.stderr, "%s org move %s: %s\n", time.Now().UTC().Format(time.TimeOnly), id, step)
		},
		// Tell the gateways at each switch (they also re-read within the
		// placement cache's lifetime, which the grace outlasts).
		Notify: func(ctx context.Context, org uuid.UUID) error {
			return tellInstances(ctx, cfg, func(rdb redis.UniversalClient) error { return auth.InvalidateOrg(ctx, rdb, org) })
		},
	}
	var res store.MoveResult
	if *resume {
		res, err = a.ResumeMove(ctx, id, opts)
	} else {
		res, err = a.MoveOrg(ctx, id, to, opts)
	}
	if err != nil {
		if errors.Is(err, store.ErrNotFound) && !strings.Contains(err.Error(), "deleted during") {
			return fmt.Errorf("org move: no organization %s", id)
		}
		return fmt.Errorf("org move: %w", err)
	}
	if *asJSON {
		return printJSON(e, res)
	}
	fmt.Fprintf(e.stdout, "moved organization %s from %s to %s: %d prompts rows, %d hourly, %d daily and %d end-user rollup rows, verified\n",
		id, res.From, res.To, res.Tables["prompts"].Rows, res.Tables["usage_hourly"].Rows, res.Tables["usage_daily"].Rows, res.Tables["usage_hourly_user"].Rows)
	return nil
}
