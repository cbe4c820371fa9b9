package store

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/maypok86/otter/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/tink-crypto/tink-go/v2/tink"

	"github.com/bulkheadhq/bulkhead/store/seal"
)

// Defaults of SealOptions.
const (
	DefaultSealKeyCacheTTL  = time.Minute
	DefaultSealKeyCacheSize = 10_000
)

// SealOptions configure sealing (envelope encryption of the request
// log's text). The zero value has no KEK: sealed organizations' rows are
// then written without their text (never in clear), and their sealed
// rows read back with an error; `bulkhead serve` refuses to start that
// way once `key-encryption init` has run (CheckKEK).
type SealOptions struct {
	KEK seal.KEK
	// KeyCacheTTL bounds how long an organization's unwrapped data key and
	// sealed flag are kept in process (DefaultSealKeyCacheTTL when 0):
	// `org update --seal on` reaches a running writer within it; until
	// then, its rows are written without text rather than in clear.
	KeyCacheTTL time.Duration
	// KeyCacheSize bounds the organizations kept (DefaultSealKeyCacheSize
	// when 0).
	KeyCacheSize int
}

// orgSeal is what the writer and the read API need of an organization:
// whether its text is sealed, and its data keys' AEAD (nil: it has none,
// or they do not unwrap, err saying why).
type orgSeal struct {
	sealed bool
	aead   tink.AEAD
	err    error
}

// keyring caches organizations' unwrapped data keys, so that the writer
// and the read API reach neither the database nor the KMS for them more
// than once per organization and TTL.
type keyring struct {
	kek            seal.KEK
	cache          *otter.Cache[uuid.UUID, orgSeal]
	hits, misses   atomic.Int64
	unwrapFailures atomic.Int64
}

func newKeyring(o SealOptions) (*keyring, error) {
	ttl, size := o.KeyCacheTTL, o.KeyCacheSize
	if ttl <= 0 {
		ttl = DefaultSealKeyCacheTTL
	}
	if size <= 0 {
		size = DefaultSealKeyCacheSize
	}
	c, err := otter.New(&otter.Options[uuid.UUID, orgSeal]{
		MaximumSize:      size,
		ExpiryCalculator: otter.ExpiryWriting[uuid.UUID, orgSeal](ttl),
	})
	if err != nil {
		return nil, fmt.Errorf("store: seal key cache: %w", err)
	}
	return &keyring{kek: o.KEK, cache: c}, nil
}

// orgSealSQL reads an organization's sealed flag and wrapped keyset, in
// its tenant context (both tables have forced RLS).
const orgSealSQL = `SELECT o.sealed, k.keyset FROM organizations o
	LEFT JOIN organization_keys k ON k.organization_id = o.id WHERE o.id = $1`

// lookup returns org's seal state, from the cache or read in tx (which
// must be in org's tenant context). Only a database error is returned:
// keys that do not unwrap are orgSeal.err, and not cached, so that a
// corrected KEK (FileKEK reloads) is used at once.
func (k *keyring) lookup(ctx context.Context, tx pgx.Tx, org uuid.UUID) (orgSeal, error) {
	if s, ok := k.cache.GetIfPresent(org); ok {
		k.hits.Add(1)
		return s, nil
	}
	k.misses.Add(1)
	var s orgSeal
	var wrapped []byte
	err := tx.QueryRow(ctx, orgSealSQL, org).Scan(&s.sealed, &wrapped)
	if errors.Is(err, pgx.ErrNoRows) {
		return orgSeal{}, nil // no organization: the references trigger refuses its rows
	}
	if err != nil {
		return orgSeal{}, err
	}
	if wrapped != nil {
		s.aead, s.err = k.unwrap(org, wrapped)
		if s.err != nil {
			k.unwrapFailures.Add(1)
			return s, nil
		}
	} else if s.sealed {
		s.err = errors.New("store: the organization is sealed and has no data key")
	}
	k.cache.Set(org, s)
	return s, nil
}

func (k *keyring) unwrap(org uuid.UUID, wrapped []byte) (tink.AEAD, error) {
	if k.kek == nil {
		return nil, errors.New("store: no key-encryption key is configured (BULKHEAD_SEAL_KEYSET_FILE)")
	}
	h, err := seal.Unwrap(k.kek, org, wrapped)
	if err != nil {
		return nil, err
	}
	return seal.Primitive(h)
}

// forget drops org from the cache (tests; org rekey in process).
func (k *keyring) forget(org uuid.UUID) { k.cache.Invalidate(org) }

// SealKeyCacheStats reports the data-key cache's hits and misses since the
// store opened, and the data keys that did not unwrap.
func (s *Store) SealKeyCacheStats() (hits, misses, unwrapFailures int64) {
	return s.keys.hits.Load(), s.keys.misses.Load(), s.keys.unwrapFailures.Load()
}

// ErrKEKMissing and ErrKEKWrong are CheckKEK's refusals.
var (
	ErrKEKMissing = errors.New("sealing is set up on this database (bulkhead key-encryption init) but no key-encryption key is configured: set BULKHEAD_SEAL_KEYSET_FILE or BULKHEAD_SEAL_KEYSET")
	ErrKEKWrong   = errors.New("the configured key-encryption key (BULKHEAD_SEAL_KEYSET_FILE / BULKHEAD_SEAL_KEYSET) is not the one this database's data keys are wrapped with")
)

// CheckKEK compares the configured KEK with the check `bulkhead
// key-encryption init` stored: the gateway must not start when sealing
// is set up and it has no KEK or the wrong one (it could neither seal
// nor read). No check stored (sealing never set up) passes with or
// without a KEK.
func (s *Store) CheckKEK(ctx context.Context) error {
	var ct []byte
	err := s.pool.QueryRow(ctx, `SELECT sealed FROM seal_kek_check WHERE id = 1`).Scan(&ct)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("store: reading the key-encryption key check: %w", err)
	}
	if s.keys.kek == nil {
		return ErrKEKMissing
	}
	if seal.VerifyKEKCheck(s.keys.kek, ct) != nil {
		return ErrKEKWrong
	}
	return nil
}

// rowSealer seals one organization's rows for the writer.
type rowSealer struct {
	org uuid.UUID
	s   orgSeal
	ad  []byte
}

// sealText appends r's prompt and response to the arrays: in clear for an
// organization that is not sealed, else as ciphertext bound to the
// organization, the row and the column, the clear columns NULL. A sealed
// organization without usable keys gets neither (the INSERT also drops
// clear text of a sealed organization: never stored in clear).
func (rs *rowSealer) sealText(a *[len(columnOIDs)]binArray, r *LogRecord) error {
	if rs == nil || !rs.s.sealed {
		a[colPrompt].text(r.Prompt)
		a[colResponse].text(r.Response)
		a[colPromptSealed].null()
		a[colResponseSealed].null()
		return nil
	}
	a[colPrompt].null()
	a[colResponse].null()
	if rs.s.aead == nil {
		a[colPromptSealed].null()
		a[colResponseSealed].null()
		return nil
	}
	for _, f := range [2]struct {
		col   int
		field seal.Field
		text  string
	}{{colPromptSealed, seal.FieldPrompt, r.Prompt}, {colResponseSealed, seal.FieldResponse, r.Response}} {
		rs.ad = seal.AppendRowAD(rs.ad[:0], f.field, rs.org, r.ID)
		ct, err := rs.s.aead.Encrypt([]byte(f.text), rs.ad)
		if err != nil {
			return fmt.Errorf("store: sealing a row: %w", err)
		}
		a[f.col].bin(ct)
	}
	return nil
}

// resolveSeals fills w.rs.seals with the seal state of every organization
// of the batch (rs.orgs), reading the ones the cache lacks in one tenant
// transaction each. A sealed organization whose keys do not unwrap is an
// error: its rows wait (spooled) rather than be written without text.
//
// Without a KEK nothing can be sealed, and nothing is looked up: the text
// goes as for an unsealed organization, and the INSERT drops it for one
// that is sealed (serve does not start that way once sealing is set up).
func (w *Writer) resolveSeals(ctx context.Context) error {
	rs := &w.rs
	rs.seals = rs.seals[:0]
	if w.st.keys.kek == nil {
		for _, org := range rs.orgs {
			rs.seals = append(rs.seals, rowSealer{org: org})
		}
		return nil
	}
	for _, org := range rs.orgs {
		s, ok := w.st.keys.cache.GetIfPresent(org)
		if ok {
			w.st.keys.hits.Add(1)
		} else {
			err := w.st.inTenantRead(ctx, org, func(tx pgx.Tx) (err error) {
				s, err = w.st.keys.lookup(ctx, tx, org)
				return err
			})
			if err != nil {
				return fmt.Errorf("store: reading organization %s's data key: %w", org, err)
			}
		}
		if s.sealed && s.err != nil {
			return fmt.Errorf("store: organization %s: %w", org, s.err)
		}
		rs.seals = append(rs.seals, rowSealer{org: org, s: s})
	}
	return nil
}

// RowError is a row of the read API whose text cannot be shown.
type RowError struct {
	Message string `json:"message"`
	Code    string `json:"code"`
}

var errRowUnreadable = &RowError{Message: "this row's text could not be decrypted", Code: "sealed_text_unreadable"}

// unseal decrypts the sealed text of org's rows ps, read in tx (org's
// tenant context). A row that does not open keeps null text and gets
// RowError; it is never shown another key's or row's text, since the
// associated data names org and the row.
func (s *Store) unseal(ctx context.Context, tx pgx.Tx, org uuid.UUID, ps []Prompt) error {
	var st *orgSeal
	var ad []byte
	for i := range ps {
		p := &ps[i]
		if p.promptSealed == nil && p.responseSealed == nil {
			continue
		}
		if st == nil {
			v, err := s.keys.lookup(ctx, tx, org)
			if err != nil {
				return err
			}
			st = &v
		}
		p.Prompt, p.Response = nil, nil
		if st.aead == nil {
			p.Error = errRowUnreadable
			continue
		}
		for _, f := range [2]struct {
			ct    []byte
			field seal.Field
			dst   **string
		}{{p.promptSealed, seal.FieldPrompt, &p.Prompt}, {p.responseSealed, seal.FieldResponse, &p.Response}} {
			if f.ct == nil {
				continue
			}
			ad = seal.AppendRowAD(ad[:0], f.field, org, p.ID)
			pt, err := st.aead.Decrypt(f.ct, ad)
			if err != nil {
				p.Prompt, p.Response, p.Error = nil, nil, errRowUnreadable
				break
			}
			text := string(pt)
			*f.dst = &text
		}
		p.promptSealed, p.responseSealed = nil, nil
	}
	return nil
}

// unsealFromMain is unseal for rows read from a database target: the data
// keys are control-plane data, read in org's context in the main database.
func (s *Store) unsealFromMain(ctx context.Context, org uuid.UUID, ps []Prompt) error {
	for _, p := range ps {
		if p.promptSealed != nil || p.responseSealed != nil {
			return s.inTenantRead(ctx, org, func(tx pgx.Tx) error { return s.unseal(ctx, tx, org, ps) })
		}
	}
	return nil
}

// sealMetrics are the data-key cache's series.
var sealMetrics = [3]*prometheus.Desc{
	prometheus.NewDesc("bulkhead_seal_key_cache_hits_total", "Look-ups of an organization's seal state and data keys served from the in-process cache.", nil, nil),
	prometheus.NewDesc("bulkhead_seal_key_cache_misses_total", "Look-ups that read the wrapped data keys from PostgreSQL and unwrapped them with the KEK.", nil, nil),
	prometheus.NewDesc("bulkhead_seal_key_unwrap_failures_total", "Wrapped data keys the KEK did not open (wrong or missing key-encryption key).", nil, nil),
}

type sealCollector struct{ k *keyring }

// SealCollector is a prometheus.Collector of the data-key cache's hits,
// misses and unwrap failures (the bulkhead_seal_* series).
func (s *Store) SealCollector() prometheus.Collector { return sealCollector{s.keys} }

func (c sealCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range sealMetrics {
		ch <- d
	}
}

func (c sealCollector) Collect(ch chan<- prometheus.Metric) {
	for i, v := range [3]int64{c.k.hits.Load(), c.k.misses.Load(), c.k.unwrapFailures.Load()} {
		ch <- prometheus.MustNewConstMetric(sealMetrics[i], prometheus.CounterValue, float64(v))
	}
}
