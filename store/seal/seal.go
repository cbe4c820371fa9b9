// Package seal is the request log's envelope encryption: per-organization
// data keys (DEKs) that seal prompt and response text, wrapped by a
// key-encryption key (KEK) that never reaches the database.
//
// The primitives and the key handling are Tink's (github.com/tink-crypto/
// tink-go/v2), nothing hand-made: a DEK is a Tink keyset of AES256-GCM
// keys, its ciphertexts start with Tink's 5-byte prefix (a version byte
// and the id of the key that sealed it), so an organization's keyset can
// gain keys (Rekey) and still open what its older keys sealed. A wrapped
// DEK is Tink's encrypted keyset, sealed by the KEK with the organization's
// id as associated data.
//
// The KEK is any tink.AEAD: a local Tink keyset (LoadLocalKEK) or a remote
// KMS. Tink's KMS extensions each give one: AWS KMS
// (github.com/tink-crypto/tink-go-awskms/v2, awskms.NewClientWithOptions(
// "aws-kms://arn:...").GetAEAD(uri)), GCP Cloud KMS
// (github.com/tink-crypto/tink-go-gcpkms/v2, gcpkms.NewClientWithOptions),
// HashiCorp Vault Transit (github.com/tink-crypto/tink-go-hcvault/v2,
// hcvault.NewClient). None is linked in: none can be tested here.
package seal

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/tink"
)

// KEK is a key-encryption key: a local keyset's AEAD or a KMS client's.
// Implementations must be safe for concurrent use (Tink's are).
type KEK interface {
	tink.AEAD
	// KeyID names the key that wraps now (a local keyset's primary key
	// id; 0 for a KMS, which keeps its versions itself).
	KeyID() uint32
}

// ErrUnreadable is the error of a ciphertext that does not open: another
// organization's or another row's, a destroyed key's, or damaged.
var ErrUnreadable = errors.New("sealed text cannot be decrypted")

// Field tells a row's sealed columns apart, so that the prompt and the
// response of one row cannot be swapped either.
type Field byte

const (
	FieldPrompt   Field = 'p'
	FieldResponse Field = 'r'
)

// adPrefix versions the associated data's layout.
const adPrefix = "bulkhead/row/v1"

// AppendRowAD appends the associated data that binds a ciphertext to its
// organization, its row and its column.
func AppendRowAD(dst []byte, f Field, org, row uuid.UUID) []byte {
	dst = append(dst, adPrefix...)
	dst = append(dst, byte(f))
	dst = append(dst, org[:]...)
	return append(dst, row[:]...)
}

// dekAD is the associated data of an organization's wrapped keyset.
func dekAD(org uuid.UUID) []byte {
	return append([]byte("bulkhead/dek/v1"), org[:]...)
}

// NewDEK returns a fresh data-key keyset of one AES256-GCM key.
func NewDEK() (*keyset.Handle, error) {
	h, err := keyset.NewHandle(aead.AES256GCMKeyTemplate())
	if err != nil {
		return nil, fmt.Errorf("seal: new data key: %w", err)
	}
	return h, nil
}

// Rekey returns h with one more key, now primary: new rows are sealed with
// it, and the older keys still open the rows they sealed.
func Rekey(h *keyset.Handle) (*keyset.Handle, error) {
	m := keyset.NewManagerFromHandle(h)
	id, err := m.Add(aead.AES256GCMKeyTemplate())
	if err != nil {
		return nil, fmt.Errorf("seal: rekey: %w", err)
	}
	if err := m.SetPrimary(id); err != nil {
		return nil, fmt.Errorf("seal: rekey: %w", err)
	}
	return m.Handle()
}

// Wrap encrypts org's keyset under kek.
func Wrap(kek KEK, org uuid.UUID, h *keyset.Handle) ([]byte, error) {
	var buf bytes.Buffer
	if err := h.WriteWithAssociatedData(keyset.NewBinaryWriter(&buf), kek, dekAD(org)); err != nil {
		return nil, fmt.Errorf("seal: wrapping the data key: %w", err)
	}
	return buf.Bytes(), nil
}

// Unwrap decrypts org's wrapped keyset. A keyset wrapped for another
// organization, or under another KEK, is an error.
func Unwrap(kek KEK, org uuid.UUID, wrapped []byte) (*keyset.Handle, error) {
	h, err := keyset.ReadWithAssociatedData(keyset.NewBinaryReader(bytes.NewReader(wrapped)), kek, dekAD(org))
	if err != nil {
		return nil, fmt.Errorf("seal: the data key does not unwrap (wrong key-encryption key?): %w", err)
	}
	return h, nil
}

// Primitive is the AEAD of a keyset.
func Primitive(h *keyset.Handle) (tink.AEAD, error) {
	p, err := aead.New(h)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return p, nil
}

// kekCheckAD and kekCheckText make the KEK check: a constant sealed under
// the KEK, stored in the database (seal_kek_check), so that a gateway
// started with the wrong KEK notices before it writes anything.
var (
	kekCheckAD   = []byte("bulkhead/kek-check/v1")
	kekCheckText = []byte("bulkhead key-encryption key check")
)

// NewKEKCheck seals the KEK check under kek.
func NewKEKCheck(kek KEK) ([]byte, error) {
	ct, err := kek.Encrypt(kekCheckText, kekCheckAD)
	if err != nil {
		return nil, fmt.Errorf("seal: sealing the key-encryption key check: %w", err)
	}
	return ct, nil
}

// VerifyKEKCheck reports whether kek opens the KEK check ct.
func VerifyKEKCheck(kek KEK, ct []byte) error {
	pt, err := kek.Decrypt(ct, kekCheckAD)
	if err != nil || !bytes.Equal(pt, kekCheckText) {
		return errors.New("seal: the configured key-encryption key does not open the check written by `bulkhead key-encryption init`: it is not the key this database's data keys are wrapped with")
	}
	return nil
}
