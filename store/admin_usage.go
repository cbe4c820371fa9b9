package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// OrgUsage is one organization's totals in a cross-tenant usage report.
type OrgUsage struct {
	OrganizationID   uuid.UUID `json:"organization_id"`
	Name             string    `json:"name"`
	Requests         int64     `json:"requests"`
	PromptTokens     int64     `json:"prompt_tokens"`
	CompletionTokens int64     `json:"completion_tokens"`
	TotalTokens      int64     `json:"total_tokens"`
}

// orgUsageSQL sums each organization's usage in one place ($1 unused but
// typed, [$2, $5) the window, [$3, $4) its whole hours): the whole hours
// from the hourly rollups, the partial hours at the ends from prompts.
// (Each FROM follows a space: placeSQL names the place's tables.)
const orgUsageSQL = `SELECT organization_id, sum(n)::bigint, sum(p)::bigint, sum(c)::bigint, sum(u)::bigint FROM (
	SELECT organization_id, requests AS n, prompt_tokens AS p, completion_tokens AS c, usage_tokens AS u FROM usage_hourly
	WHERE hour >= $3 AND hour < $4 AND $1::uuid IS NULL
	UNION ALL
	SELECT organization_id, 1, prompt_tokens, completion_tokens, usage_tokens FROM prompts
	WHERE (created_at >= $2 AND created_at < $3 OR created_at >= $4 AND created_at < $5)
) x GROUP BY organization_id`

// afterOrgsListed, when set (tests only), runs between the list of
// organizations and the reads of their places of UsageByOrg and of
// MigratePlaces and PlacesStatus.
var afterOrgsListed func()

// UsageByOrg sums every organization's requests and tokens in
// [since, until), busiest first: the operator's view across tenants
// (owner role), over every place: the shared tables, each tenant schema
// and each database target. Whole hours come from the hourly rollups, only
// the partial hours at the ends from the request log. A target that
// cannot be reached fails the report, naming it: a total that silently
// left tenants out would be wrong.
//
// An organization deleted or moved out of its schema between the list of
// organizations and the read of that schema starts the report over, up
// to three times: the new list no longer has it there.
func (a *Admin) UsageByOrg(ctx context.Context, since, until time.Time) ([]OrgUsage, error) {
	for try := 1; ; try++ {
		out, err := a.usageByOrg(ctx, since, until)
		if errors.Is(err, errPlaceGone) && try < 3 {
			continue
		}
		return out, err
	}
}

// errPlaceGone: a tenant schema UsageByOrg listed is no longer its
// organization's.
var errPlaceGone = errors.New("the organization's schema is gone")

func (a *Admin) usageByOrg(ctx context.Context, since, until time.Time) ([]OrgUsage, error) {
	args := hourArgs(uuid.Nil, since, until)
	args[0] = nil
	totals := map[uuid.UUID]*OrgUsage{}
	// where: each organization's place. A row counts only from there: while
	// an organization is moved, its rows are also in the other place (the
	// copies before the cut-over, the rows not yet removed after it:
	// move.go), and are not counted twice.
	where := map[uuid.UUID]Place{}
	add := func(p Place, rows pgx.Rows) error {
		var u OrgUsage
		_, err := pgx.ForEachRow(rows, []any{&u.OrganizationID, &u.Requests, &u.PromptTokens, &u.CompletionTokens, &u.TotalTokens}, func() error {
			if at, ok := where[u.OrganizationID]; ok && at != p {
				return nil
			}
			t := totals[u.OrganizationID]
			if t == nil {
				t = &OrgUsage{OrganizationID: u.OrganizationID}
				totals[u.OrganizationID] = t
			}
			t.Requests += u.Requests
			t.PromptTokens += u.PromptTokens
			t.CompletionTokens += u.CompletionTokens
			t.TotalTokens += u.TotalTokens
			return nil
		})
		return err
	}
	// The main database: the shared place and every tenant schema.
	places := []Place{SharedPlace}
	var placements []string
	rows, err := a.pool.Query(ctx, `SELECT id, placement FROM organizations`)
	if err != nil {
		return nil, fmt.Errorf("usage by organization: %w", err)
	}
	var id uuid.UUID
	var placement string
	if _, err := pgx.ForEachRow(rows, []any{&id, &placement}, func() error {
		p, err := ParsePlacement(placement)
		if err != nil {
			return err
		}
		where[id] = PlaceOf(id, p)
		if p.Kind == PlaceShared {
			return nil
		}
		if p.Kind == PlaceSchema {
			places = append(places, PlaceOf(id, p))
		} else if !slices.Contains(placements, p.Target) {
			placements = append(placements, p.Target)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("usage by organization: %w", err)
	}
	if afterOrgsListed != nil {
		afterOrgsListed()
	}
	for _, p := range places {
		rows, err := a.pool.Query(ctx, placeSQL(orgUsageSQL, p), args...)
		if err == nil {
			err = add(p, rows)
		}
		if err != nil && p.Org != uuid.Nil && (isCode(err, "42P01") || isCode(err, "3F000")) {
			if gone, gerr := schemaPlaceGone(ctx, a.pool, p.Org); gerr == nil && gone {
				err = fmt.Errorf("%w: %w", errPlaceGone, err)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("usage by organization: %s: %w", p, err)
		}
	}
	// The database targets organizations are placed on.
	slices.Sort(placements)
	for _, name := range placements {
		t, err := a.targets.get(name)
		if err != nil {
			return nil, fmt.Errorf("usage by organization: %w", err)
		}
		conn, err := connectTarget(ctx, t.Name, "admin", t.AdminDSN)
		if err != nil {
			return nil, fmt.Errorf("usage by organization: %w", err)
		}
		rows, err := conn.Query(ctx, placeSQL(orgUsageSQL, Place{Target: name, Schema: "public"}), args...)
		if err == nil {
			err = add(Place{Target: name, Schema: "public"}, rows)
		}
		conn.Close(ctx)
		if err != nil {
			return nil, fmt.Errorf("usage by organization: database target %s: %w", name, err)
		}
	}
	if len(totals) == 0 {
		return []OrgUsage{}, nil
	}
	rows, err = a.pool.Query(ctx, `SELECT id, name FROM organizations WHERE id = ANY($1)`, slices.Collect(maps.Keys(totals)))
	if err != nil {
		return nil, fmt.Errorf("usage by organization: %w", err)
	}
	var name string
	if _, err := pgx.ForEachRow(rows, []any{&id, &name}, func() error {
		totals[id].Name = name
		return nil
	}); err != nil {
		return nil, fmt.Errorf("usage by organization: %w", err)
	}
	out := make([]OrgUsage, 0, len(totals))
	for _, t := range totals {
		if t.Name != "" { // rows of an organization deleted meanwhile are not reported
			out = append(out, *t)
		}
	}
	slices.SortFunc(out, func(x, y OrgUsage) int {
		if c := cmp.Compare(y.Requests, x.Requests); c != 0 {
			return c
		}
		return strings.Compare(x.OrganizationID.String(), y.OrganizationID.String())
	})
	return out, nil
}
