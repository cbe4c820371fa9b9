package main

import (
	"context"
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/bulkheadhq/bulkhead/config"
)

// configCmd prints the effective configuration (secrets redacted), or with
// --markdown the table of every setting that the README carries.
func configCmd(_ context.Context, e env, args []string) error {
	fs, path := flags(e, "config")
	markdown := fs.Bool("markdown", false, "print the table of settings (variable | default | meaning) instead")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	if *markdown {
		fmt.Fprintln(e.stdout, "| variable | default | meaning |\n|---|---|---|")
		for _, v := range config.Vars() {
			def := "`" + v.Default + "`"
			if v.Default == "" {
				def = "(empty)"
			}
			fmt.Fprintf(e.stdout, "| `%s` | %s | %s (YAML `%s`) |\n", v.Env, def, strings.ReplaceAll(v.Help, "|", `\|`), v.YAML)
		}
		return nil
	}
	cfg, err := loadConfig(e, *path)
	if err != nil {
		return err
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		return err
	}
	_, err = e.stdout.Write(out)
	return err
}
