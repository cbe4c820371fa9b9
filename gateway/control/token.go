package control

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strings"

	"github.com/google/uuid"
)

// Prefixes of the control plane's bearer tokens: an operator's
// (bulkhead admin-token create), a console session's, and an
// organization's admin key.
const (
	operatorTokenPrefix = "bhadm_"
	sessionTokenPrefix  = "bhs_"
	orgAdminKeyPrefix   = "bhk_"
)

// orgAdminKeyLen: "bhk_", the organization's 32 hex digits, "_", 43
// base64url characters of 256 random bits.
const orgAdminKeyLen = len(orgAdminKeyPrefix) + 32 + 1 + 43

// NewOrgAdminKey returns a fresh admin key of org, its hash to store and
// the prefix shown in lists. The key names its organization, so that it
// is looked up inside that organization's tenant context only.
func NewOrgAdminKey(org uuid.UUID) (key string, hash [32]byte, display string) {
	key = orgAdminKeyPrefix + hex.EncodeToString(org[:]) + "_" + random()
	return key, sha256.Sum256([]byte(key)), key[:len(orgAdminKeyPrefix)+8] + "…" + key[len(key)-4:]
}

// orgAdminKeyOrg returns the organization an admin key names, if s has
// an admin key's form.
func orgAdminKeyOrg(s string) (uuid.UUID, bool) {
	if len(s) != orgAdminKeyLen || !strings.HasPrefix(s, orgAdminKeyPrefix) || s[len(orgAdminKeyPrefix)+32] != '_' {
		return uuid.Nil, false
	}
	var org uuid.UUID
	if _, err := hex.Decode(org[:], []byte(s[len(orgAdminKeyPrefix):len(orgAdminKeyPrefix)+32])); err != nil || org == uuid.Nil {
		return uuid.Nil, false
	}
	return org, true
}

// NewOperatorToken returns a fresh operator token and the hash to store:
// 256 random bits, so that a guess costs nothing to refuse.
func NewOperatorToken() (token string, hash [32]byte) {
	token = operatorTokenPrefix + random()
	return token, sha256.Sum256([]byte(token))
}

// IsOperatorToken reports whether s has an operator token's form.
func IsOperatorToken(s string) bool {
	return strings.HasPrefix(s, operatorTokenPrefix) && len(s) == len(operatorTokenPrefix)+43
}

func random() string {
	var b [32]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}
