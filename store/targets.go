package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Target is a database target (config database_targets): a database,
// possibly on another server, that holds the data plane of the
// organizations placed on it (placement database:NAME), in its public
// schema. Its DSNs come from environment variables that the configuration
// names, so no credential is stored in PostgreSQL.
type Target struct {
	Name string
	// DSN is the runtime role's (the gateway's), AdminDSN the owner
	// role's (migrations, deletions).
	DSN, AdminDSN string
}

// appRole is the user the target's runtime DSN connects as: the role its
// migrations grant to.
func (t Target) appRole() (string, error) {
	cfg, err := pgx.ParseConfig(t.DSN)
	if err != nil {
		return "", fmt.Errorf("database target %s: the runtime URL does not parse", t.Name)
	}
	return cfg.User, nil
}

// CheckTarget connects to target t as both roles and refuses a runtime
// role that could escape RLS: a superuser, a role with BYPASSRLS, the
// owner role itself or a member of it. Every error names the target.
func CheckTarget(ctx context.Context, t Target) error {
	owner, err := pgx.ParseConfig(t.AdminDSN)
	if err != nil {
		return fmt.Errorf("database target %s: the admin URL does not parse", t.Name)
	}
	conn, err := connectTarget(ctx, t.Name, "runtime", t.DSN)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	var super, bypass, isOwner bool
	err = conn.QueryRow(ctx, `SELECT r.rolsuper, r.rolbypassrls,
			current_user = $1 OR coalesce(pg_has_role(current_user, (SELECT oid FROM pg_roles WHERE rolname = $1), 'MEMBER'), false)
		FROM pg_roles r WHERE r.rolname = current_user`, owner.User).Scan(&super, &bypass, &isOwner)
	if err != nil {
		return fmt.Errorf("database target %s: reading the runtime role: %w", t.Name, err)
	}
	var bad []string
	if super {
		bad = append(bad, "is a superuser")
	}
	if bypass {
		bad = append(bad, "has BYPASSRLS")
	}
	if isOwner {
		bad = append(bad, "is (or is a member of) the owner role "+owner.User)
	}
	if len(bad) > 0 {
		return fmt.Errorf("database target %s: the runtime role %s %s: %w", t.Name, conn.Config().User, strings.Join(bad, " and "), ErrTargetRole)
	}
	oconn, err := connectTarget(ctx, t.Name, "admin", t.AdminDSN)
	if err != nil {
		return err
	}
	return oconn.Close(ctx)
}

// connectTarget connects to one of a target's DSNs; the error names the
// target and the role, never the DSN.
func connectTarget(ctx context.Context, name, role, dsn string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("database target %s: the %s URL does not parse", name, role)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("database target %s is unreachable (%s role, %s:%d): %w", name, role, cfg.Host, cfg.Port, err)
	}
	return conn, nil
}

// ErrTargetRole: a database target's runtime role could escape RLS.
var ErrTargetRole = errors.New("it must be a role that RLS holds (no superuser, no BYPASSRLS, not the owner)")

// ErrUnknownTarget: a placement names a database target that the
// configuration does not.
var ErrUnknownTarget = errors.New("unknown database target")

// targetSet is the configured targets by name.
type targetSet map[string]Target

func newTargetSet(ts []Target) targetSet {
	m := targetSet{}
	for _, t := range ts {
		m[t.Name] = t
	}
	return m
}

// get returns the target named name, or an error naming it and the
// configured ones.
func (m targetSet) get(name string) (Target, error) {
	if t, ok := m[name]; ok {
		return t, nil
	}
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.Sort(names)
	known := "none is configured"
	if len(names) > 0 {
		known = "configured: " + strings.Join(names, ", ")
	}
	return Target{}, fmt.Errorf("%w %q (%s; see database_targets)", ErrUnknownTarget, name, known)
}
