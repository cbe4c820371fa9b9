package seal

import (
	"sync"
	"time"
)

// FileKEK is a LocalKEK read from a file that it reads again when a
// decryption fails (at most once per second): `bulkhead key-encryption
// rotate` rewrites the file with a new primary key, the old ones kept,
// before it re-wraps the data keys, so a running gateway that meets a data
// key wrapped by the new key picks it up without a restart.
type FileKEK struct {
	path string
	mu   sync.Mutex
	cur  *LocalKEK
	last time.Time
}

var _ KEK = (*FileKEK)(nil)

// OpenFileKEK reads the keyset file at path.
func OpenFileKEK(path string) (*FileKEK, error) {
	k, err := LoadLocalKEK(path)
	if err != nil {
		return nil, err
	}
	return &FileKEK{path: path, cur: k, last: time.Now()}, nil
}

func (f *FileKEK) current() *LocalKEK {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cur
}

// Encrypt wraps with the current primary key.
func (f *FileKEK) Encrypt(plaintext, ad []byte) ([]byte, error) {
	return f.current().Encrypt(plaintext, ad)
}

// Decrypt unwraps; on failure it reads the file again, if it has not in
// the last second, and tries once more.
func (f *FileKEK) Decrypt(ciphertext, ad []byte) ([]byte, error) {
	pt, err := f.current().Decrypt(ciphertext, ad)
	if err == nil {
		return pt, nil
	}
	f.mu.Lock()
	if time.Since(f.last) < time.Second {
		f.mu.Unlock()
		return nil, err
	}
	f.last = time.Now()
	k, lerr := LoadLocalKEK(f.path)
	if lerr == nil {
		f.cur = k
	}
	f.mu.Unlock()
	if lerr != nil {
		return nil, err
	}
	return k.Decrypt(ciphertext, ad)
}

// KeyID is the current primary key's id.
func (f *FileKEK) KeyID() uint32 { return f.current().KeyID() }

// Local is the keyset as last read.
func (f *FileKEK) Local() *LocalKEK { return f.current() }

// String never prints key material.
func (f *FileKEK) String() string { return "file " + f.current().String() }
