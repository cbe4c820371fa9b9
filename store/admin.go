package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkheadhq/bulkhead/store/seal"
)

// Admin performs the operator's actions (organizations, keys) as the owner
// role: for the CLI, and for the control plane's operators (gateway/control,
// which `serve` runs only while BULKHEAD_CONTROL_LISTEN is set); the data
// path never uses it. Every change writes an audit_log row in the same
// transaction.
//
// Where an action concerns one organization it still runs inside that
// organization's tenant context, so that a mistake in it is caught by the
// same policies as the gateway's statements; only listings across
// organizations rely on the owner's BYPASSRLS.
type Admin struct {
	pool    *pgxpool.Pool
	actor   string
	kek     seal.KEK  // UseKEK; nil: sealing cannot be turned on
	targets targetSet // UseTargets; the database targets organizations may be placed on
}

// OpenAdmin connects as the owner role. actor names who acts in the audit
// log (for example "cli:alice").
func OpenAdmin(ctx context.Context, ownerDSN, actor string) (*Admin, error) {
	pool, err := newPool(ctx, ownerDSN, Options{MaxConns: 2})
	if err != nil {
		return nil, err
	}
	return &Admin{pool: pool, actor: actor}, nil
}

// OpenAdminLazy is OpenAdmin for a long-running process (the control
// plane): it does not wait for PostgreSQL, connecting when first needed,
// and keeps up to maxConns connections.
func OpenAdminLazy(ctx context.Context, ownerDSN, actor string, maxConns int32) (*Admin, error) {
	pool, err := newPool(ctx, ownerDSN, Options{MaxConns: maxConns, Lazy: true})
	if err != nil {
		return nil, err
	}
	return &Admin{pool: pool, actor: actor}, nil
}

// Close closes the pool. It is idempotent.
func (a *Admin) Close() { a.pool.Close() }

// Organization is a tenant.
type Organization struct {
	ID          uuid.UUID `json:"id"`
	Name        string    `json:"name"`
	CaptureMode string    `json:"capture_mode"`
	// RetentionDays: how many days its request log is kept; 0 forever;
	// nil the installation's default (bulkhead retention).
	RetentionDays *int      `json:"retention_days"`
	CreatedAt     time.Time `json:"created_at"`
	// Sealed: its prompt and response text is stored encrypted under its
	// own data keys (admin_seal.go).
	Sealed bool `json:"sealed"`
	// Placement is where its data plane lives: shared, schema or
	// database:NAME (placement.go).
	Placement string `json:"placement"`
}

// orgColumns are Organization's columns, in its order.
const orgColumns = `id, name, capture_mode, retention_days, created_at, sealed, placement`

// Capture modes of an organization's request log.
const (
	CaptureFull     = "full"     // prompt and response text are stored
	CaptureMetadata = "metadata" // tokens, model, status, latency; no text
)

// ValidCaptureMode reports whether m is a capture mode.
func ValidCaptureMode(m string) bool { return m == CaptureFull || m == CaptureMetadata }

// CreateOrg creates an organization with a fresh id, the default capture
// mode (full), not sealed.
func (a *Admin) CreateOrg(ctx context.Context, name string) (Organization, error) {
	return a.CreateOrgSealed(ctx, name, CaptureFull, false)
}

// CreateOrgSealed creates an organization with a fresh id, capture mode,
// and sealing on (its data keys created at once, which needs the KEK) or
// off.
func (a *Admin) CreateOrgSealed(ctx context.Context, name, capture string, sealed bool) (Organization, error) {
	org, _, err := a.CreateOrgOnce(ctx, name, capture, sealed, Idempotency{})
	return org, err
}

// CreateOrgOnce is CreateOrgSealed with an idempotency key: when this
// actor used idem.Key before, it creates nothing and returns the
// organization created then, and replayed true (ErrIdempotencyMismatch if
// that was another request). A zero idem creates one every time.
func (a *Admin) CreateOrgOnce(ctx context.Context, name, capture string, sealed bool, idem Idempotency) (org Organization, replayed bool, err error) {
	return a.CreateOrgPlaced(ctx, NewOrg{Name: name, Capture: capture, Sealed: sealed}, idem)
}

// NewOrg is what CreateOrgPlaced makes.
type NewOrg struct {
	Name    string
	Capture string // CaptureFull or CaptureMetadata
	Sealed  bool
	// Placement of its data plane; the zero value is shared.
	Placement Placement
}

// CreateOrgPlaced is CreateOrgOnce with a placement. The organization's
// place is made ready first (its schema created and migrated, or its
// database target checked and migrated); if that or the organization's
// row fails, nothing is left: a schema made for it is dropped.
func (a *Admin) CreateOrgPlaced(ctx context.Context, spec NewOrg, idem Idempotency) (org Organization, replayed bool, err error) {
	id := uuid.New()
	org = Organization{ID: id, Name: spec.Name}
	placement := spec.Placement.String()
	if err := a.preparePlace(ctx, id, spec.Placement); err != nil {
		return Organization{}, false, fmt.Errorf("creating organization: %w", err)
	}
	used := false
	defer func() {
		if !used {
			a.discardPlace(context.WithoutCancel(ctx), id, spec.Placement)
		}
	}()
	err = a.inTenant(ctx, org.ID, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx,
			`INSERT INTO organizations (id, name, capture_mode, placement) VALUES ($1, $2, $3, $4)
			RETURNING capture_mode, retention_days, created_at, placement`,
			org.ID, spec.Name, spec.Capture, placement).Scan(&org.CaptureMode, &org.RetentionDays, &org.CreatedAt, &org.Placement)
		if err != nil {
			return err
		}
		if spec.Sealed {
			if err := a.setSealed(ctx, tx, org.ID, true); err != nil {
				return err
			}
			org.Sealed = true
		}
		if err := remember(ctx, tx, org.ID, a.actor, idem, org); err != nil {
			return err
		}
		return audit(ctx, tx, org.ID, a.actor, "org.create", org.ID.String(), map[string]any{
			"name": spec.Name, "capture": spec.Capture, "sealed": spec.Sealed, "placement": placement})
	})
	if errors.Is(err, errReplay) {
		org = Organization{}
		err = replay(ctx, a.pool, a.actor, idem, &org)
		return org, err == nil, err
	}
	if err != nil {
		return Organization{}, false, fmt.Errorf("creating organization: %w", classify(err))
	}
	used = true
	return org, false, nil
}

// Orgs lists every organization, oldest first.
func (a *Admin) Orgs(ctx context.Context) ([]Organization, error) {
	var all []Organization
	var after *Cursor
	for {
		page, err := orgsPage(ctx, a.pool, after, orgsPageMax)
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		if len(page) < orgsPageMax {
			return all, nil
		}
		last := page[len(page)-1]
		after = &Cursor{CreatedAt: last.CreatedAt, ID: last.ID}
	}
}

// orgsPageMax is the largest page OrgsPage returns.
const orgsPageMax = 1000

// OrgsPage lists up to limit organizations (at most 1000), oldest first,
// after the cursor (nil: from the first): keyset paging on
// (created_at, id).
func (a *Admin) OrgsPage(ctx context.Context, after *Cursor, limit int) ([]Organization, error) {
	return orgsPage(ctx, a.pool, after, limit)
}

// rowsQuerier runs a query returning rows: the owner's pool, or a
// tenant's transaction.
type rowsQuerier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// orgsPage is the one query of organization listings: across tenants
// through the owner's pool, or inside a tenant's context, where RLS leaves
// its own organization only.
func orgsPage(ctx context.Context, q rowsQuerier, after *Cursor, limit int) ([]Organization, error) {
	limit = min(max(limit, 1), orgsPageMax)
	var rows pgx.Rows
	var err error
	if after == nil {
		rows, err = q.Query(ctx, `SELECT `+orgColumns+` FROM organizations ORDER BY created_at, id LIMIT $1`, limit)
	} else {
		rows, err = q.Query(ctx, `SELECT `+orgColumns+` FROM organizations WHERE (created_at, id) > ($1, $2)
			ORDER BY created_at, id LIMIT $3`, after.CreatedAt, after.ID, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("listing organizations: %w", err)
	}
	orgs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Organization])
	if err != nil {
		return nil, fmt.Errorf("listing organizations: %w", err)
	}
	return orgs, nil
}

// Org returns organization id (ErrNotFound if there is none).
func (a *Admin) Org(ctx context.Context, id uuid.UUID) (Organization, error) {
	return orgByID(ctx, a.pool, id)
}

func orgByID(ctx context.Context, q querier, id uuid.UUID) (Organization, error) {
	var o Organization
	err := q.QueryRow(ctx, `SELECT `+orgColumns+` FROM organizations WHERE id = $1`, id).
		Scan(&o.ID, &o.Name, &o.CaptureMode, &o.RetentionDays, &o.CreatedAt, &o.Sealed, &o.Placement)
	if err != nil {
		return Organization{}, fmt.Errorf("reading organization %s: %w", id, classify(err))
	}
	return o, nil
}

// As returns an Admin that shares a's connections and names actor in the
// audit log: the control plane acts for many callers through one pool.
func (a *Admin) As(actor string) *Admin {
	return &Admin{pool: a.pool, actor: actor, kek: a.kek, targets: a.targets}
}

// OrgChanges are the changes UpdateOrg makes; zero fields keep what is.
type OrgChanges struct {
	Name    string
	Capture string
	// Retention: nil keeps it; else InheritRetention (-1) unsets it (the
	// installation's default applies), Forever or days set it.
	Retention *Retention
	// Seal: nil keeps it; else turns sealing on (creating the data keys
	// if there are none) or off (rows sealed before stay sealed).
	Seal *bool
}

// InheritRetention, as OrgChanges.Retention, gives the organization back
// the installation's default.
const InheritRetention Retention = -1

// UpdateOrg changes an organization's name, capture mode and retention.
func (a *Admin) UpdateOrg(ctx context.Context, id uuid.UUID, c OrgChanges) (Organization, error) {
	var o Organization
	setRetention, retention := c.Retention != nil, (*int)(nil)
	details := map[string]any{"name": c.Name, "capture": c.Capture}
	if setRetention && *c.Retention != InheritRetention {
		days := int(*c.Retention)
		retention = &days
		details["retention"] = c.Retention.String()
	} else if setRetention {
		details["retention"] = "default"
	}
	if c.Seal != nil {
		details["sealed"] = *c.Seal
	}
	err := a.inTenant(ctx, id, func(tx pgx.Tx) error {
		if c.Seal != nil {
			if err := a.setSealed(ctx, tx, id, *c.Seal); err != nil {
				return err
			}
		}
		err := tx.QueryRow(ctx, `UPDATE organizations SET name = coalesce(nullif($2, ''), name),
			capture_mode = coalesce(nullif($3, ''), capture_mode),
			retention_days = CASE WHEN $4 THEN $5 ELSE retention_days END,
			retention_swept_until = CASE WHEN $4 THEN NULL ELSE retention_swept_until END
			WHERE id = $1
			RETURNING `+orgColumns, id, c.Name, c.Capture, setRetention, retention).
			Scan(&o.ID, &o.Name, &o.CaptureMode, &o.RetentionDays, &o.CreatedAt, &o.Sealed, &o.Placement)
		if err != nil {
			return err
		}
		return audit(ctx, tx, id, a.actor, "org.update", id.String(), details)
	})
	if err != nil {
		return Organization{}, fmt.Errorf("updating organization %s: %w", id, classify(err))
	}
	return o, nil
}

// OrgByName returns the oldest organization with that name.
func (a *Admin) OrgByName(ctx context.Context, name string) (Organization, error) {
	var o Organization
	err := a.pool.QueryRow(ctx,
		`SELECT `+orgColumns+` FROM organizations WHERE name = $1 ORDER BY created_at, id LIMIT 1`,
		name).Scan(&o.ID, &o.Name, &o.CaptureMode, &o.RetentionDays, &o.CreatedAt, &o.Sealed, &o.Placement)
	if err != nil {
		return Organization{}, fmt.Errorf("finding organization %q: %w", name, classify(err))
	}
	return o, nil
}

// afterDeletionRead, when set (tests only), runs in DeleteOrg after its
// read of the organization's placement.
var afterDeletionRead func()

// DeleteOrg deletes an organization and every row of it in every table
// (its prompts explicitly, most of them first in steps of their own,
// deletePromptsInSteps; its keys by cascade): the right to be forgotten.
// Its data keys are destroyed first, in a transaction of their own,
// audited (org.shred): from then on its sealed text is unreadable
// wherever a copy lives (crypto-shredding). The audit row recording the
// deletion is written first, in the same transaction, and survives it. It
// returns the hashes of the deleted keys, for the caller to evict from
// caches. A move that ends while it runs sends it back to the start, from
// the new placement (deleteOrgOnce); one still running refuses it.
func (a *Admin) DeleteOrg(ctx context.Context, id uuid.UUID) ([][32]byte, error) {
	for range 3 {
		hashes, err := a.deleteOrgOnce(ctx, id)
		if !errors.Is(err, errPlacementChanged) {
			return hashes, err
		}
	}
	return nil, fmt.Errorf("deleting organization %s: %w three times in a row: try again", id, errPlacementChanged)
}

// errPlacementChanged: the organization was moved (a move ended) between
// deleteOrgOnce's read of its placement and its locked transaction, which
// would have deleted where it was, not where it is.
var errPlacementChanged = errors.New("its placement changed while it was being deleted")

// deleteOrgOnce is DeleteOrg from one read of the placement:
// errPlacementChanged if it is not the placement under the lock.
func (a *Admin) deleteOrgOnce(ctx context.Context, id uuid.UUID) ([][32]byte, error) {
	var hashes [][32]byte
	o, err := a.Org(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("deleting organization %s: %w", id, err)
	}
	placement, err := ParsePlacement(o.Placement)
	if err != nil {
		return nil, fmt.Errorf("deleting organization %s: %w", id, err)
	}
	if afterDeletionRead != nil {
		afterDeletionRead()
	}
	// Not while it is moved: its rows are in two places (move.go).
	if _, to, step, err := a.MoveStep(ctx, id); err != nil || step != "" {
		if err == nil {
			err = fmt.Errorf("%w (to %s, step %s): finish it first with `bulkhead org move %s --resume`", ErrMoveInProgress, to, step, id)
		}
		return nil, fmt.Errorf("deleting organization %s: %w", id, err)
	}
	if _, err := a.shredOrgKeys(ctx, id); err != nil {
		return nil, err
	}
	// A database target's rows first: if the target cannot be reached,
	// the organization stays, and deleting it again finishes the job.
	if placement.Kind == PlaceDatabase {
		if err := a.deleteTargetRows(ctx, id, placement); err != nil {
			return nil, fmt.Errorf("deleting organization %s: %w", id, err)
		}
	}
	if err := a.deletePromptsInSteps(ctx, id); err != nil {
		return nil, fmt.Errorf("deleting organization %s: %w", id, classify(err))
	}
	err = a.inTenant(ctx, id, func(tx pgx.Tx) error {
		// The lock first: it waits for request-log inserts in flight
		// (their trigger holds FOR KEY SHARE on the organization), so the
		// DELETE below sees their rows, and inserts after it are refused.
		var (
			moving  bool
			current string
		)
		if err := tx.QueryRow(ctx, `SELECT move_step IS NOT NULL, placement FROM organizations WHERE id = $1 FOR UPDATE`, id).Scan(&moving, &current); err != nil {
			return err
		}
		if moving { // a move started since the check above
			return ErrMoveInProgress
		}
		if current != o.Placement { // and ended: its rows are elsewhere now
			return errPlacementChanged
		}
		for _, table := range dataTables { // the shared place's; a schema is dropped below
			if _, err := tx.Exec(ctx, `DELETE FROM public.`+table+` WHERE organization_id = $1`, id); err != nil {
				return err
			}
		}
		rows, err := tx.Query(ctx, `SELECT key_hash FROM api_keys WHERE organization_id = $1`, id)
		if err != nil {
			return err
		}
		raw, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
		if err != nil {
			return err
		}
		for _, h := range raw {
			hashes = append(hashes, [32]byte(h))
		}
		if err := audit(ctx, tx, id, a.actor, "org.delete", id.String(), map[string]any{"keys": len(hashes), "placement": o.Placement}); err != nil {
			return err
		}
		if placement.Kind == PlaceSchema {
			if err := dropSchema(ctx, tx, id); err != nil {
				return err
			}
		}
		tag, err := tx.Exec(ctx, `DELETE FROM organizations WHERE id = $1`, id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return pgx.ErrNoRows
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("deleting organization %s: %w", id, classify(err))
	}
	return hashes, nil
}

// deleteStep is the most request-log rows one step of deletePromptsInSteps
// deletes.
const deleteStep = 10000

// deletePromptsInSteps deletes org's rows of the shared request log in
// steps of at most deleteStep rows, each its own transaction, until a
// step finds fewer. It runs before DeleteOrg's transaction, which locks
// the organization's row: every insert into the request log takes FOR KEY
// SHARE of its organization's row (the reference check), so while that
// transaction deleted a large tenant's millions of rows, the writer's
// batches, every tenant's rows in them, waited for it. What the writer
// adds meanwhile goes in that transaction, with the lock.
func (a *Admin) deletePromptsInSteps(ctx context.Context, org uuid.UUID) error {
	for {
		var n int64
		err := a.inTenant(ctx, org, func(tx pgx.Tx) error {
			tag, err := tx.Exec(ctx, `DELETE FROM public.prompts WHERE (organization_id, created_at, id) IN (
				SELECT organization_id, created_at, id FROM public.prompts WHERE organization_id = $1 LIMIT $2)`, org, deleteStep)
			n = tag.RowsAffected()
			return err
		})
		if err != nil || n < deleteStep {
			return err
		}
	}
}

func (a *Admin) inTenant(ctx context.Context, tenant uuid.UUID, fn func(pgx.Tx) error) error {
	return inTenant(ctx, a.pool, tenant, fn)
}

// audit appends one audit_log row inside tx (whose tenant context must be org).
func audit(ctx context.Context, tx pgx.Tx, org uuid.UUID, actor, action, target string, details map[string]any) error {
	if details == nil {
		details = map[string]any{}
	}
	b, err := json.Marshal(details)
	if err != nil {
		return fmt.Errorf("audit details: %w", err)
	}
	var orgArg any = org
	if org == uuid.Nil { // installation-wide (the owner only)
		orgArg = nil
	}
	_, err = tx.Exec(ctx,
		`INSERT INTO audit_log (organization_id, actor, action, target, details) VALUES ($1, $2, $3, $4, $5)`,
		orgArg, actor, action, target, b)
	if err != nil {
		return fmt.Errorf("writing audit row: %w", err)
	}
	return nil
}
