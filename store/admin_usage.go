package store

import (
	"context"
	"fmt"
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

// UsageByOrg sums every organization's requests and tokens in
// [since, until), busiest first: the operator's view across tenants
// (owner role). It reads the request log itself, day partitions pruned to
// the range; per-tenant rollups would make it cheaper at scale.
func (a *Admin) UsageByOrg(ctx context.Context, since, until time.Time) ([]OrgUsage, error) {
	rows, err := a.pool.Query(ctx, `SELECT p.organization_id, o.name, p.requests, p.prompt_tokens, p.completion_tokens, p.total_tokens
		FROM (SELECT organization_id, count(*) AS requests, coalesce(sum(prompt_tokens), 0) AS prompt_tokens,
		             coalesce(sum(completion_tokens), 0) AS completion_tokens, coalesce(sum(usage_tokens), 0) AS total_tokens
		      FROM prompts WHERE created_at >= $1 AND created_at < $2 GROUP BY organization_id) p
		JOIN organizations o ON o.id = p.organization_id
		ORDER BY p.requests DESC, p.organization_id`, since, until)
	if err != nil {
		return nil, fmt.Errorf("usage by organization: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[OrgUsage])
	if err != nil {
		return nil, fmt.Errorf("usage by organization: %w", err)
	}
	return out, nil
}
