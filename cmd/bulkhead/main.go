// Command bulkhead is the Bulkhead gateway and its operator tools, one
// binary with subcommands:
//
//	bulkhead serve                      run the gateway
//	bulkhead migrate                    apply database migrations (owner role); record BULKHEAD_RETENTION
//	bulkhead org create --name NAME     create an organization (tenant)
//	bulkhead org list                   list organizations
//	bulkhead org update ID [--name N] [--capture full|metadata] [--retention 30d|forever|default]
//	bulkhead org delete ID              delete an organization and all its data
//	bulkhead key create --org ID --name NAME --rpm N [--tpm N] [--expires D]
//	bulkhead key list --org ID | revoke ID | rotate ID [--overlap D]
//	bulkhead key update ID [--rpm N] [--tpm N]
//	bulkhead retention run              remove the request log's rows past their retention
//	bulkhead demo                       ensure the demo organization exists
//	bulkhead config [--markdown]        print the effective configuration
//
// Every subcommand takes --config FILE (or BULKHEAD_CONFIG); the
// environment overrides the file. This file is wiring only.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/bulkheadhq/bulkhead/config"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "bulkhead:", err)
		}
		os.Exit(1)
	}
}

// env is the process environment as the commands see it.
type env struct {
	lookup func(string) (string, bool)
	stdout io.Writer
	stderr io.Writer
}

type command struct {
	name, usage string
	run         func(ctx context.Context, e env, args []string) error
}

func commands() []command {
	return []command{
		{"serve", "run the gateway", serveCmd},
		{"control", "serve only the control plane (admin API and console) on BULKHEAD_CONTROL_LISTEN", controlCmd},
		{"migrate", "apply database migrations as the owner role", migrateCmd},
		{"org", "manage organizations: create, list, update, rekey, delete, move", orgCmd},
		{"key", "manage API keys: create, list, update, revoke, rotate", keyCmd},
		{"key-encryption", "init: create and record the key-encryption key that wraps sealed organizations' data keys; rotate: re-wrap them all under a new one", keyEncryptionCmd},
		{"admin-token", "manage the control plane's operator tokens: create, list, revoke", adminTokenCmd},
		{"org-admin-key", "manage organization admin keys (a tenant administrator's credential for the control plane): create, list, revoke", orgAdminKeyCmd},
		{"model", "manage the model catalog: add, list, update, remove; grant, revoke (an organization's access)", modelCmd},
		{"budget", "manage dollar budgets per organization, key or end user: set, list, remove", budgetCmd},
		{"retention", "run: record BULKHEAD_RETENTION as the default and remove the request log's rows past their retention", retentionCmd},
		{"demo", "ensure the demo organization exists and print how to use it", demoCmd},
		{"config", "print the effective configuration (secrets redacted), or --markdown the settings table", configCmd},
	}
}

func run(ctx context.Context, args []string, lookup func(string) (string, bool), stdout, stderr io.Writer) error {
	e := env{lookup: lookup, stdout: stdout, stderr: stderr}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return errors.New("no command given")
		}
		return nil
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, e, args[1:])
		}
	}
	usage(stderr)
	return fmt.Errorf("unknown command %q", args[0])
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: bulkhead COMMAND [--config FILE] [flags]\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.usage)
	}
}

// flags returns a FlagSet for a subcommand with the common --config flag.
func flags(e env, name string) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("bulkhead "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	def, _ := e.lookup("BULKHEAD_CONFIG")
	path := fs.String("config", def, "YAML configuration `file` (env BULKHEAD_CONFIG); BULKHEAD_* variables override it")
	return fs, path
}

// loadConfig loads the configuration every subcommand runs with: the
// --config file at path (none if empty), then the environment. The error
// lists every problem, each naming its variable.
func loadConfig(e env, path string) (config.Config, error) {
	cfg, err := config.Load(path, e.lookup)
	if err != nil {
		return config.Config{}, fmt.Errorf("invalid configuration:\n%w", err)
	}
	return cfg, nil
}
