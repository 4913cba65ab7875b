// Package secret provides the bearer secrets the manager hands out
// (activation tokens, API keys) and the one-way form it stores instead.
package secret

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/hex"
	"fmt"
	"strings"
)

// encoding is lowercase base32 without padding: easy to copy, no ambiguous
// symbols for shells or URLs.
var encoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// New returns a secret with 160 random bits behind a readable prefix (so a
// leaked string says what it is, and secret scanners can find it) and the
// hash to store.
func New(prefix string) (plain, hash string, err error) {
	b := make([]byte, 20)
	if _, err := rand.Read(b); err != nil {
		return "", "", fmt.Errorf("generate secret: %w", err)
	}
	plain = prefix + "_" + strings.ToLower(encoding.EncodeToString(b))
	return plain, Hash(plain), nil
}

// Hash is the stored form of a secret. A plain SHA-256 is enough because the
// secrets carry 160 random bits: there is nothing to brute-force, unlike a
// password.
func Hash(plain string) string {
	sum := sha256.Sum256([]byte(plain))
	return hex.EncodeToString(sum[:])
}

// Equal compares a presented secret with a stored hash in constant time.
func Equal(plain, hash string) bool {
	got := Hash(plain)
	return subtle.ConstantTimeCompare([]byte(got), []byte(hash)) == 1
}
