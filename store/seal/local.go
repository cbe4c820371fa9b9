package seal

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/insecurecleartextkeyset"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/tink"
)

// LocalKEK is a key-encryption key held in a local Tink keyset (JSON,
// cleartext: protect the file like a private key, mode 0600, or keep it in
// a secret store that fills BULKHEAD_SEAL_KEYSET). It wraps with its
// primary key and unwraps with any of its keys, which is what lets
// `key-encryption rotate` re-wrap every data key while gateways still hold
// the old keyset.
type LocalKEK struct {
	tink.AEAD
	h *keyset.Handle
}

var _ KEK = (*LocalKEK)(nil)

// NewLocalKEK returns a fresh local KEK of one AES256-GCM key.
func NewLocalKEK() (*LocalKEK, error) {
	h, err := keyset.NewHandle(aead.AES256GCMKeyTemplate())
	if err != nil {
		return nil, fmt.Errorf("seal: new key-encryption key: %w", err)
	}
	return localKEK(h)
}

// ParseLocalKEK reads a Tink keyset in JSON (what MarshalJSON writes).
// The error never quotes the input.
func ParseLocalKEK(js []byte) (*LocalKEK, error) {
	h, err := insecurecleartextkeyset.Read(keyset.NewJSONReader(bytes.NewReader(js)))
	if err != nil {
		return nil, fmt.Errorf("seal: the key-encryption keyset is not a Tink JSON keyset")
	}
	return localKEK(h)
}

// LoadLocalKEK reads the keyset file at path.
func LoadLocalKEK(path string) (*LocalKEK, error) {
	js, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("seal: reading the key-encryption keyset: %w", err)
	}
	return ParseLocalKEK(js)
}

func localKEK(h *keyset.Handle) (*LocalKEK, error) {
	p, err := aead.New(h)
	if err != nil {
		return nil, fmt.Errorf("seal: the key-encryption keyset holds no AEAD key: %w", err)
	}
	return &LocalKEK{AEAD: p, h: h}, nil
}

// KeyID is the primary key's id.
func (k *LocalKEK) KeyID() uint32 { return k.h.KeysetInfo().GetPrimaryKeyId() }

// KeyIDs are the ids of every key of the keyset.
func (k *LocalKEK) KeyIDs() []uint32 {
	var ids []uint32
	for _, ki := range k.h.KeysetInfo().GetKeyInfo() {
		ids = append(ids, ki.GetKeyId())
	}
	return ids
}

// MarshalJSON writes the keyset, secrets included.
func (k *LocalKEK) MarshalJSON() ([]byte, error) {
	var buf bytes.Buffer
	if err := insecurecleartextkeyset.Write(k.h, keyset.NewJSONWriter(&buf)); err != nil {
		return nil, fmt.Errorf("seal: writing the key-encryption keyset: %w", err)
	}
	return buf.Bytes(), nil
}

// String never prints key material.
func (k *LocalKEK) String() string { return fmt.Sprintf("local KEK (primary key %d)", k.KeyID()) }

// Rotated returns the keyset with a new primary key, the old keys kept
// for unwrapping.
func (k *LocalKEK) Rotated() (*LocalKEK, error) {
	m := keyset.NewManagerFromHandle(k.h)
	id, err := m.Add(aead.AES256GCMKeyTemplate())
	if err != nil {
		return nil, fmt.Errorf("seal: rotating the key-encryption key: %w", err)
	}
	if err := m.SetPrimary(id); err != nil {
		return nil, fmt.Errorf("seal: rotating the key-encryption key: %w", err)
	}
	h, err := m.Handle()
	if err != nil {
		return nil, err
	}
	return localKEK(h)
}

// PrimaryOnly returns the keyset without its older keys: once every data
// key is wrapped by the primary, they are retired.
func (k *LocalKEK) PrimaryOnly() (*LocalKEK, error) {
	m := keyset.NewManagerFromHandle(k.h)
	for _, id := range k.KeyIDs() {
		if id == k.KeyID() {
			continue
		}
		if err := m.Disable(id); err != nil {
			return nil, fmt.Errorf("seal: retiring key %d: %w", id, err)
		}
		if err := m.Delete(id); err != nil {
			return nil, fmt.Errorf("seal: retiring key %d: %w", id, err)
		}
	}
	h, err := m.Handle()
	if err != nil {
		return nil, err
	}
	return localKEK(h)
}

// WriteFile writes the keyset to path atomically (a temporary file in the
// same directory, mode 0600, synced, then renamed over path).
func (k *LocalKEK) WriteFile(path string) error {
	js, err := k.MarshalJSON()
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".bulkhead-kek-*")
	if err != nil {
		return fmt.Errorf("seal: writing the key-encryption keyset: %w", err)
	}
	defer os.Remove(f.Name()) // gone after the rename; removes it on an error
	if err = f.Chmod(0o600); err == nil {
		if _, err = f.Write(js); err == nil {
			err = f.Sync()
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("seal: writing the key-encryption keyset: %w", err)
	}
	return nil
}
