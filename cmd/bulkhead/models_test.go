package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/bulkheadhq/bulkhead/gateway/catalog"
	"github.com/bulkheadhq/bulkhead/store/storetest"
)

func modelRows(t *testing.T, name string) int {
	t.Helper()
	var n int
	if err := storetest.OwnerPool(t).QueryRow(context.Background(), `SELECT count(*) FROM models WHERE name = $1`, name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func modelAuditRows(t *testing.T) int {
	t.Helper()
	var n int
	if err := storetest.OwnerPool(t).QueryRow(context.Background(), `SELECT count(*) FROM audit_log WHERE action LIKE 'model.%'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestModelCLI(t *testing.T) {
	storetest.Admin(t)
	rdb := storetest.Redis(t)
	sub := rdb.Subscribe(context.Background(), catalog.InvalidationChannel)
	defer sub.Close()
	if _, err := sub.Receive(context.Background()); err != nil {
		t.Fatal(err)
	}
	org, _, err := cli(t, "org", "create", "--name", "cli models")
	if err != nil {
		t.Fatal(err)
	}
	org = strings.TrimSpace(org)
	name := "cli-" + uuid.NewString()[:8]

	out, _, err := cli(t, "model", "add", "--name", name, "--upstream", "default", "--input-price", "0.15", "--output-price", "0.6", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Name             string  `json:"name"`
		OrganizationID   *string `json:"organization_id"`
		InputPrice       string  `json:"input_price_usd"`
		CachedInputPrice string  `json:"cached_input_price_usd"`
		OutputPrice      string  `json:"output_price_usd"`
		Enabled          bool    `json:"enabled"`
	}
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("model add --json: %v\n%s", err, out)
	}
	if m.Name != name || m.OrganizationID != nil || m.InputPrice != "0.15" || m.CachedInputPrice != "0.15" || m.OutputPrice != "0.6" || !m.Enabled {
		t.Errorf("model add --json = %+v", m)
	}
	msg, err := sub.ReceiveTimeout(context.Background(), 5*time.Second)
	if err != nil || !strings.Contains(msg.(interface{ String() string }).String(), "*") {
		t.Errorf("a shared model's addition published %v, %v; want the shared invalidation", msg, err)
	}
	if _, _, err := cli(t, "model", "add", "--org", org, "--name", name, "--upstream", "default", "--input-price", "1", "--output-price", "2"); err != nil {
		t.Fatalf("a private model shadowing the shared name: %v", err)
	}
	if _, _, err := cli(t, "model", "revoke", "--org", org, "--model", name); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cli(t, "model", "update", "--name", name, "--output-price", "0.75", "--disable"); err != nil {
		t.Fatal(err)
	}
	list, _, err := cli(t, "model", "list", "--org", org, "--json")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(list, `"name": "`+name+`"`) != 2 || !strings.Contains(list, `"output_price_usd": "0.75"`) {
		t.Errorf("model list --org --json:\n%s", list)
	}

	before, rows := modelAuditRows(t), modelRows(t, name)
	for label, args := range map[string][]string{
		"negative price":     {"model", "add", "--name", name + "x", "--upstream", "default", "--input-price", "-1", "--output-price", "1"},
		"absurd price":       {"model", "add", "--name", name + "x", "--upstream", "default", "--input-price", "1", "--output-price", "100000.000001"},
		"float syntax":       {"model", "add", "--name", name + "x", "--upstream", "default", "--input-price", "1e-3", "--output-price", "1"},
		"unknown upstream":   {"model", "add", "--name", name + "x", "--upstream", "nowhere", "--input-price", "1", "--output-price", "1"},
		"missing price":      {"model", "add", "--name", name + "x", "--upstream", "default", "--input-price", "1"},
		"duplicate":          {"model", "add", "--name", name, "--upstream", "default", "--input-price", "1", "--output-price", "1"},
		"unknown org":        {"model", "add", "--org", uuid.NewString(), "--name", name + "x", "--upstream", "default", "--input-price", "1", "--output-price", "1"},
		"update bad price":   {"model", "update", "--name", name, "--input-price", "-0.5"},
		"update bad upstrm":  {"model", "update", "--name", name, "--upstream", "nowhere"},
		"update nothing":     {"model", "update", "--name", name},
		"update missing":     {"model", "update", "--name", name + "x", "--enable"},
		"grant missing":      {"model", "grant", "--org", org, "--model", name + "x"},
		"grant unknown org":  {"model", "grant", "--org", uuid.NewString(), "--model", name},
		"remove missing":     {"model", "remove", "--name", name + "x"},
		"control characters": {"model", "add", "--name", "a\nb", "--upstream", "default", "--input-price", "1", "--output-price", "1"},
	} {
		_, _, err := cli(t, args...)
		if err == nil {
			t.Errorf("%s: accepted", label)
			continue
		}
		if strings.Contains(err.Error(), "\n") || strings.Contains(err.Error(), "SQLSTATE") {
			t.Errorf("%s: error is not one clean line: %q", label, err)
		}
	}
	if got := modelAuditRows(t); got != before {
		t.Errorf("refused commands wrote %d audit rows", got-before)
	}
	if got := modelRows(t, name); got != rows {
		t.Errorf("refused commands changed the models: %d rows, had %d", got, rows)
	}
	if got := modelRows(t, name+"x"); got != 0 {
		t.Errorf("refused commands added %d models", got)
	}

	if _, _, err := cli(t, "model", "remove", "--name", name); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cli(t, "model", "remove", "--org", org, "--name", name); err != nil {
		t.Fatal(err)
	}
	if got := modelRows(t, name); got != 0 {
		t.Errorf("%d rows after both removals", got)
	}
}
