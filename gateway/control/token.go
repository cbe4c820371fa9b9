package control

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"strings"
)

// Prefixes of the control plane's bearer tokens: an operator's
// (bulkhead admin-token create) and a console session's.
const (
	operatorTokenPrefix = "bhadm_"
	sessionTokenPrefix  = "bhs_"
)

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
