package store

import (
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"

	"github.com/google/uuid"
)

// Placement is where an organization's data plane (prompts, usage_hourly
// and every later table of tenant content) lives; the control plane
// (organizations, api_keys, audit_log, ...) is always in the main
// database. It is set when the organization is created and stored in
// organizations.placement (migration 00016).
//
// The zero value is PlaceShared.
type Placement struct {
	// Kind is PlaceShared, PlaceSchema or PlaceDatabase.
	Kind string
	// Target names the database target (config database_targets) of a
	// PlaceDatabase placement; empty otherwise.
	Target string
}

// dataTables are the data plane's tables of tenant content, in the order
// deleting an organization empties them where it is placed. They have no
// foreign key to the control plane, which may be in another database: a
// new one is added here as well as to store/migrations/data.
var dataTables = []string{"prompts", "usage_hourly", "usage_daily", "usage_hourly_user", "usage_daily_user", "usage_monthly_user"}

// Placement kinds.
const (
	// PlaceShared: the shared tables of the main database's public
	// schema, every tenant's rows side by side under forced RLS.
	PlaceShared = "shared"
	// PlaceSchema: the same tables in a schema of the organization's own
	// in the main database (SchemaName), RLS forced there too, each
	// policy also pinned to the organization.
	PlaceSchema = "schema"
	// PlaceDatabase: the same tables in the public schema of a database
	// target, which several organizations may share.
	PlaceDatabase = "database"
)

// targetName is what a database target may be called: it is stored in
// organizations.placement (whose CHECK says the same) and named in logs.
var targetName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,39}$`)

// ValidTargetName reports whether name may name a database target.
func ValidTargetName(name string) bool { return targetName.MatchString(name) }

// ParsePlacement reads "shared", "schema" or "database:NAME" (the empty
// string is shared).
func ParsePlacement(s string) (Placement, error) {
	switch s {
	case "", PlaceShared:
		return Placement{Kind: PlaceShared}, nil
	case PlaceSchema:
		return Placement{Kind: PlaceSchema}, nil
	}
	name, ok := strings.CutPrefix(s, PlaceDatabase+":")
	if !ok || !ValidTargetName(name) {
		return Placement{}, fmt.Errorf("placement %q: want shared, schema or database:NAME (NAME a database target: lower-case letters, digits, _)", s)
	}
	return Placement{Kind: PlaceDatabase, Target: name}, nil
}

// String is the placement as ParsePlacement reads it and
// organizations.placement stores it.
func (p Placement) String() string {
	switch p.Kind {
	case PlaceSchema:
		return PlaceSchema
	case PlaceDatabase:
		return PlaceDatabase + ":" + p.Target
	}
	return PlaceShared
}

// SchemaName is the schema of a PlaceSchema organization: derived from its
// id alone, never from input, so that no name can be chosen to collide
// with another schema.
func SchemaName(org uuid.UUID) string { return "t_" + hex.EncodeToString(org[:]) }

// tenantSchema matches the names SchemaName makes.
var tenantSchema = regexp.MustCompile(`^t_[0-9a-f]{32}$`)

// Place is one place where the data-plane tables exist: the main
// database's public schema (the shared place), a tenant schema of the main
// database, or the public schema of a database target.
type Place struct {
	// Target is the database target; empty for the main database.
	Target string
	// Schema is "public" or a tenant schema (SchemaName).
	Schema string
	// Org is the organization a tenant schema belongs to, whose id every
	// policy there pins; uuid.Nil for the shared places.
	Org uuid.UUID
}

// SharedPlace is the main database's public schema.
var SharedPlace = Place{Schema: "public"}

// PlaceOf is where org's data plane is under placement p.
func PlaceOf(org uuid.UUID, p Placement) Place {
	switch p.Kind {
	case PlaceSchema:
		return Place{Schema: SchemaName(org), Org: org}
	case PlaceDatabase:
		return Place{Target: p.Target, Schema: "public"}
	}
	return SharedPlace
}

// String names the place in messages: shared, schema t_..., or
// database:NAME.
func (p Place) String() string {
	switch {
	case p.Target != "":
		return PlaceDatabase + ":" + p.Target
	case p.Schema != "public":
		return "schema " + p.Schema
	}
	return PlaceShared
}

// table is the schema-qualified name of a data-plane table in this place.
// Statements always name the schema: a search_path is connection state,
// which a pooled connection could carry from one use to the next.
func (p Place) table(name string) string { return p.Schema + "." + name }
