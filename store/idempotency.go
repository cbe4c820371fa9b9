package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Idempotency names a create that may be retried: the caller's
// Idempotency-Key and a hash of the request it came with. The zero value
// makes a create that is not remembered.
type Idempotency struct {
	Key         string
	RequestHash [32]byte
}

// ErrIdempotencyMismatch: an idempotency key was used before with another
// request.
var ErrIdempotencyMismatch = errors.New("idempotency key reused with another request")

// errReplay rolls back a create whose idempotency key was used before:
// the caller then reads the first result (replay).
var errReplay = errors.New("idempotency key used before")

// remember records result as the answer to idem under scope, inside the
// create's transaction (tenant context org). If the key is already
// recorded (a retry, or a concurrent duplicate that committed first) it
// returns errReplay, which rolls the create back.
func remember(ctx context.Context, tx pgx.Tx, org uuid.UUID, scope string, idem Idempotency, result any) error {
	if idem.Key == "" {
		return nil
	}
	b, err := json.Marshal(result)
	if err != nil {
		return fmt.Errorf("idempotency record: %w", err)
	}
	// A concurrent duplicate waits here for the first to commit or roll
	// back, then inserts nothing or its own row.
	tag, err := tx.Exec(ctx, `INSERT INTO control_idempotency (organization_id, actor, idempotency_key, request_hash, response)
		VALUES ($1, $2, $3, $4, $5) ON CONFLICT (actor, idempotency_key) DO NOTHING`, org, scope, idem.Key, idem.RequestHash[:], b)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return errReplay
	}
	return nil
}

// querier runs one query: a pool (the owner's, across tenants) or a
// transaction (a tenant's context).
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// replay reads the first result recorded for idem under scope into out.
func replay(ctx context.Context, q querier, scope string, idem Idempotency, out any) error {
	var hash, b []byte
	err := q.QueryRow(ctx, `SELECT request_hash, response FROM control_idempotency WHERE actor = $1 AND idempotency_key = $2`,
		scope, idem.Key).Scan(&hash, &b)
	if err != nil {
		return fmt.Errorf("reading the first result of idempotency key: %w", classify(err))
	}
	if string(hash) != string(idem.RequestHash[:]) {
		return ErrIdempotencyMismatch
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("reading the first result of idempotency key: %w", err)
	}
	return nil
}
