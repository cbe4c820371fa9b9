// Package apikey defines Bulkhead's API key format:
//
//	sk_<organization uuid>_<secret><checksum>
//
// secret is 32 random bytes from crypto/rand, base64url without padding (43
// characters); checksum is the CRC-32 (IEEE) of everything before it, as 6
// base64url characters. The fixed layout lets Check reject a mistyped,
// truncated or made-up key with no I/O and no allocation, before any cache,
// Redis or database look-up. The checksum is not a secret and proves
// nothing about authenticity; the look-up of the SHA-256 does.
//
// Only Hash(key) and Display(key) are ever stored.
package apikey

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"hash/crc32"

	"github.com/google/uuid"
)

const (
	prefix      = "sk_"
	orgStart    = len(prefix)   // 3
	orgEnd      = orgStart + 36 // 39: the canonical 8-4-4-4-12 form
	secretStart = orgEnd + 1    // 40, after the '_'
	secretLen   = 43            // base64url of 32 bytes
	sumStart    = secretStart + secretLen
	sumLen      = 6 // base64url of 4 bytes

	// Len is the length of every key.
	Len = sumStart + sumLen // 89
)

// Strict: a checksum with non-zero padding bits is another string for the
// same bytes, and must not pass.
var b64 = base64.RawURLEncoding.Strict()

// Generate returns a new key for org.
func Generate(org uuid.UUID) (string, error) {
	var secret [32]byte
	if _, err := rand.Read(secret[:]); err != nil {
		return "", fmt.Errorf("apikey: reading random bytes: %w", err)
	}
	buf := make([]byte, 0, Len)
	buf = append(buf, prefix...)
	buf = append(buf, org.String()...)
	buf = append(buf, '_')
	buf = b64.AppendEncode(buf, secret[:])
	var sum [4]byte
	c := crc32.ChecksumIEEE(buf)
	sum[0], sum[1], sum[2], sum[3] = byte(c>>24), byte(c>>16), byte(c>>8), byte(c)
	buf = b64.AppendEncode(buf, sum[:])
	return string(buf), nil
}

// Check reports whether key is well-formed with a correct checksum, and if
// so returns the organization segment (a slice of key, in canonical UUID
// form). It does no I/O and does not allocate.
func Check(key []byte) (org []byte, ok bool) {
	if len(key) != Len || string(key[:orgStart]) != prefix || key[orgEnd] != '_' {
		return nil, false
	}
	for i, c := range key[orgStart:orgEnd] {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if c != '-' {
				return nil, false
			}
		} else if charClass[c]&lowerHex == 0 {
			return nil, false
		}
	}
	for _, c := range key[secretStart:sumStart] {
		if charClass[c]&base64URL == 0 {
			return nil, false
		}
	}
	var sum [4]byte
	if n, err := b64.Decode(sum[:], key[sumStart:]); err != nil || n != 4 {
		return nil, false
	}
	want := uint32(sum[0])<<24 | uint32(sum[1])<<16 | uint32(sum[2])<<8 | uint32(sum[3])
	if crc32.ChecksumIEEE(key[:sumStart]) != want {
		return nil, false
	}
	return key[orgStart:orgEnd], true
}

// charClass classifies bytes for Check without branches per range.
var charClass = func() (t [256]uint8) {
	for c := 0; c < 256; c++ {
		b := byte(c)
		if '0' <= b && b <= '9' || 'a' <= b && b <= 'f' {
			t[c] |= lowerHex
		}
		if 'A' <= b && b <= 'Z' || 'a' <= b && b <= 'z' || '0' <= b && b <= '9' || b == '-' || b == '_' {
			t[c] |= base64URL
		}
	}
	return t
}()

const (
	lowerHex uint8 = 1 << iota
	base64URL
)

// Hash is the SHA-256 of key: what the database stores and caches are keyed by.
func Hash(key []byte) [32]byte { return sha256.Sum256(key) }

// Display is the short, non-secret form shown in listings and logs:
// "sk_" + the first 8 characters of the organization + "..." + the last 4
// characters of the key. It reveals 24 bits of checksum at most.
func Display(key string) string {
	if len(key) != Len {
		return "sk_..."
	}
	return key[:orgStart+8] + "..." + key[Len-4:]
}
