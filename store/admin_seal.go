package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bulkheadhq/bulkhead/store/seal"
)

// ErrNoKEK is returned by the actions that need the key-encryption key
// when the Admin has none (UseKEK).
var ErrNoKEK = errors.New("no key-encryption key is configured (BULKHEAD_SEAL_KEYSET_FILE or BULKHEAD_SEAL_KEYSET)")

// UseKEK gives the Admin the key-encryption key that wraps organizations'
// data keys (sealing on, rekey, key-encryption rotate).
func (a *Admin) UseKEK(k seal.KEK) { a.kek = k }

// HasKEK reports whether the Admin holds a key-encryption key (UseKEK):
// whether it can seal an organization.
func (a *Admin) HasKEK() bool { return a.kek != nil }

// newOrgKeys creates org's data keyset, wrapped, inside tx (org's tenant
// context), unless it has one.
func (a *Admin) newOrgKeys(ctx context.Context, tx pgx.Tx, org uuid.UUID) error {
	if a.kek == nil {
		return ErrNoKEK
	}
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT FROM organization_keys WHERE organization_id = $1)`, org).Scan(&exists); err != nil || exists {
		return err
	}
	h, err := seal.NewDEK()
	if err != nil {
		return err
	}
	wrapped, err := seal.Wrap(a.kek, org, h)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `INSERT INTO organization_keys (organization_id, keyset, kek_key_id) VALUES ($1, $2, $3)`,
		org, wrapped, int64(a.kek.KeyID()))
	return err
}

// setSealed turns org's sealing on (creating its data keys if it has
// none) or off (its keys stay: rows sealed before still read).
func (a *Admin) setSealed(ctx context.Context, tx pgx.Tx, org uuid.UUID, on bool) error {
	if on {
		if err := a.newOrgKeys(ctx, tx, org); err != nil {
			return err
		}
	}
	_, err := tx.Exec(ctx, `UPDATE organizations SET sealed = $2 WHERE id = $1`, org, on)
	return err
}

// RekeyOrg gives the organization a new data key, which its new rows are
// sealed with; its older keys stay in its keyset, so older rows read as
// before (the ciphertext names its key). Running gateways take it up
// within BULKHEAD_SEAL_KEY_CACHE_TTL. Audited as org.rekey.
func (a *Admin) RekeyOrg(ctx context.Context, org uuid.UUID) (keys int, err error) {
	if a.kek == nil {
		return 0, ErrNoKEK
	}
	err = a.inTenant(ctx, org, func(tx pgx.Tx) error {
		var wrapped []byte
		if err := tx.QueryRow(ctx, `SELECT keyset FROM organization_keys WHERE organization_id = $1 FOR UPDATE`, org).Scan(&wrapped); err != nil {
			return err
		}
		h, err := seal.Unwrap(a.kek, org, wrapped)
		if err != nil {
			return err
		}
		if h, err = seal.Rekey(h); err != nil {
			return err
		}
		if wrapped, err = seal.Wrap(a.kek, org, h); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE organization_keys SET keyset = $2, kek_key_id = $3, updated_at = now() WHERE organization_id = $1`,
			org, wrapped, int64(a.kek.KeyID())); err != nil {
			return err
		}
		keys = h.Len()
		return audit(ctx, tx, org, a.actor, "org.rekey", org.String(), map[string]any{"keys": keys})
	})
	if err != nil {
		return 0, fmt.Errorf("rekeying organization %s: %w", org, classify(err))
	}
	return keys, nil
}

// shredOrgKeys destroys org's data keys in a transaction of its own,
// audited (org.shred), before anything else of the organization is
// deleted: every copy of its sealed rows, backups included, is then
// unreadable, whatever happens to the rest of the deletion. It reports
// whether there were keys.
func (a *Admin) shredOrgKeys(ctx context.Context, org uuid.UUID) (bool, error) {
	var shredded bool
	err := a.inTenant(ctx, org, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM organization_keys WHERE organization_id = $1`, org)
		if err != nil || tag.RowsAffected() == 0 {
			return err
		}
		shredded = true
		return audit(ctx, tx, org, a.actor, "org.shred", org.String(), map[string]any{"data_keys": "destroyed"})
	})
	if err != nil {
		return false, fmt.Errorf("destroying the data keys of organization %s: %w", org, classify(err))
	}
	return shredded, nil
}

// InitKEK records the check of kek (seal_kek_check), which `bulkhead
// serve` verifies at start. Done once; again with the same KEK it
// changes nothing, with another it is refused.
func (a *Admin) InitKEK(ctx context.Context, kek seal.KEK) (created bool, err error) {
	err = pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error {
		var ct []byte
		err := tx.QueryRow(ctx, `SELECT sealed FROM seal_kek_check WHERE id = 1 FOR UPDATE`).Scan(&ct)
		if err == nil {
			if seal.VerifyKEKCheck(kek, ct) != nil {
				return ErrKEKWrong
			}
			return nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		if ct, err = seal.NewKEKCheck(kek); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO seal_kek_check (id, kek_key_id, sealed) VALUES (1, $1, $2)`, int64(kek.KeyID()), ct); err != nil {
			return err
		}
		created = true
		return audit(ctx, tx, uuid.Nil, a.actor, "kek.init", fmt.Sprint(kek.KeyID()), nil)
	})
	if err != nil {
		return false, fmt.Errorf("initialising the key-encryption key: %w", err)
	}
	return created, nil
}

// VerifyKEK checks kek against the recorded check: ErrKEKMissing-like
// refusal when none is recorded (run key-encryption init first), ErrKEKWrong
// for another key.
func (a *Admin) VerifyKEK(ctx context.Context, kek seal.KEK) error {
	var ct []byte
	err := a.pool.QueryRow(ctx, `SELECT sealed FROM seal_kek_check WHERE id = 1`).Scan(&ct)
	if errors.Is(err, pgx.ErrNoRows) {
		return errors.New("no key-encryption key is recorded: run bulkhead key-encryption init first")
	}
	if err != nil {
		return fmt.Errorf("reading the key-encryption key check: %w", err)
	}
	if seal.VerifyKEKCheck(kek, ct) != nil {
		return ErrKEKWrong
	}
	return nil
}

// RewrapAll re-wraps every organization's data keys under kek's primary
// key (kek must still open what its older keys wrapped: a rotated local
// keyset keeps them), then seals the KEK check under it. The rows are not
// touched: their ciphertexts depend on the data keys only. Each
// organization is one transaction in its tenant context, audited
// (org.rewrap); the run is audited as kek.rotate. It returns how many
// organizations it re-wrapped.
func (a *Admin) RewrapAll(ctx context.Context, kek seal.KEK) (int, error) {
	rows, err := a.pool.Query(ctx, `SELECT organization_id FROM organization_keys WHERE kek_key_id <> $1 ORDER BY 1`, int64(kek.KeyID()))
	if err != nil {
		return 0, fmt.Errorf("listing data keys: %w", err)
	}
	orgs, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return 0, fmt.Errorf("listing data keys: %w", err)
	}
	n, err := a.rewrap(ctx, kek, orgs)
	if err != nil {
		return n, err
	}
	err = pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error {
		ct, err := seal.NewKEKCheck(kek)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO seal_kek_check (id, kek_key_id, sealed) VALUES (1, $1, $2)
			ON CONFLICT (id) DO UPDATE SET kek_key_id = excluded.kek_key_id, sealed = excluded.sealed, updated_at = now()`,
			int64(kek.KeyID()), ct); err != nil {
			return err
		}
		return audit(ctx, tx, uuid.Nil, a.actor, "kek.rotate", fmt.Sprint(kek.KeyID()), map[string]any{"organizations": n})
	})
	if err != nil {
		return n, fmt.Errorf("recording the key-encryption key check: %w", err)
	}
	return n, nil
}

// rewrap re-wraps the data keys of orgs under kek's primary key, one
// tenant transaction each, audited (org.rewrap).
func (a *Admin) rewrap(ctx context.Context, kek seal.KEK, orgs []uuid.UUID) (int, error) {
	n := 0
	for _, org := range orgs {
		err := a.inTenant(ctx, org, func(tx pgx.Tx) error {
			var wrapped []byte
			var from int64
			err := tx.QueryRow(ctx, `SELECT keyset, kek_key_id FROM organization_keys WHERE organization_id = $1 FOR UPDATE`, org).Scan(&wrapped, &from)
			if errors.Is(err, pgx.ErrNoRows) {
				return nil // deleted meanwhile
			}
			if err != nil {
				return err
			}
			h, err := seal.Unwrap(kek, org, wrapped)
			if err != nil {
				return err
			}
			if wrapped, err = seal.Wrap(kek, org, h); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `UPDATE organization_keys SET keyset = $2, kek_key_id = $3, updated_at = now() WHERE organization_id = $1`,
				org, wrapped, int64(kek.KeyID())); err != nil {
				return err
			}
			n++
			return audit(ctx, tx, org, a.actor, "org.rewrap", org.String(), map[string]any{"from_kek_key": from, "to_kek_key": kek.KeyID()})
		})
		if err != nil {
			return n, fmt.Errorf("re-wrapping the data keys of organization %s: %w", org, classify(err))
		}
	}
	return n, nil
}

// WrappedUnder counts the organizations whose data keys are wrapped by a
// key other than keyID (what a rotation has left to do).
func (a *Admin) WrappedUnder(ctx context.Context, keyID uint32) (others int, err error) {
	err = a.pool.QueryRow(ctx, `SELECT count(*) FROM organization_keys WHERE kek_key_id <> $1`, int64(keyID)).Scan(&others)
	return others, err
}
