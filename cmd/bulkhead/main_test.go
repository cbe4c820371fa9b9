package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
)

func lookupFrom(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// A bad configuration makes serve fail with every problem named, before
// it listens on anything.
func TestServeRejectsBadConfig(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"serve"}, lookupFrom(map[string]string{
		"BULKHEAD_LISTEN":       "nope",
		"BULKHEAD_UPSTREAM_URL": "file:///etc/passwd",
		// Both DSNs are refused, so their problems are reported: neither
		// report may quote the password.
		"BULKHEAD_DATABASE_URL":       "mysql://app:s3cret-pw@db:5432/x",
		"BULKHEAD_ADMIN_DATABASE_URL": "postgres://owner:s3cret-pw@db:5432/x%zz",
		"BULKHEAD_LOG_FORMAT":         "xml",
	}), &stdout, &stderr)
	if err == nil {
		t.Fatal("serve accepted a bad configuration")
	}
	for _, want := range []string{"BULKHEAD_LISTEN", "BULKHEAD_UPSTREAM_URL", "BULKHEAD_LOG_FORMAT", "BULKHEAD_DATABASE_URL", "BULKHEAD_ADMIN_DATABASE_URL"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s: %v", want, err)
		}
	}
	if strings.Contains(err.Error()+stdout.String()+stderr.String(), "s3cret-pw") {
		t.Error("a password reached the output")
	}
}

func TestUnknownCommand(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"frobnicate"}, lookupFrom(nil), &out, &out); err == nil {
		t.Error("unknown command accepted")
	}
	if err := run(context.Background(), nil, lookupFrom(nil), &out, &out); err == nil {
		t.Error("no command accepted")
	}
}

func TestConfigMarkdownMatchesREADME(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"config", "--markdown"}, lookupFrom(nil), &out, &out); err != nil {
		t.Fatal(err)
	}
	readme, err := readFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(readme, out.String()) {
		t.Errorf("README.md's configuration table is stale; replace it with the output of `bulkhead config --markdown`:\n%s", out.String())
	}
}

func readFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	return string(b), err
}
