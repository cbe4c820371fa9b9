package store

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"
)

// AcquireForTest hands a test one of the pool's own connections, so that a
// test can prove what a reused connection carries.
func AcquireForTest(ctx context.Context, s *Store) (*pgxpool.Conn, error) { return s.pool.Acquire(ctx) }
