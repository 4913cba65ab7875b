// Package auth provides who may do what on the manager: users' argon2id
// passwords, the three roles and their permissions, OAuth2 access and
// refresh tokens (opaque, stored as hashes, revocable at once), and the
// brake on password guessing.
package auth

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Roles.
const (
	RoleAdmin    = "admin"
	RoleOperator = "operator"
	RoleAuditor  = "auditor"
)

// ValidRole reports whether r names a role.
func ValidRole(r string) bool { return r == RoleAdmin || r == RoleOperator || r == RoleAuditor }

// Allowed says whether a role holds a permission. Permissions are
// "resource:read" or "resource:write".
//
//   - admin: everything;
//   - operator: computers, activation tokens, jobs, alerts and alert
//     rules, events, the notification outbox, files, the CA, policies,
//     rules and lists, flows (analysis, profiles, exporters) — not users,
//     API clients, settings, notification channels (they hold mail and
//     webhook credentials) or the audit log;
//   - auditor: every read permission, including the audit log; no writes.
func Allowed(role, perm string) bool {
	resource, action, ok := strings.Cut(perm, ":")
	if !ok {
		return false
	}
	switch role {
	case RoleAdmin:
		return true
	case RoleAuditor:
		return action == "read"
	case RoleOperator:
		switch resource {
		case "computers", "tokens", "jobs", "alerts", "alertrules", "events", "notifications", "files", "ca", "policies", "rules", "lists", "flows", "me":
			return true
		}
	}
	return false
}

// argon2id parameters: OWASP's recommended minimum (19 MiB, 2 passes, 1
// lane), about 30 ms here — costly for a guesser, bearable for a login.
const (
	argonTime    = 2
	argonMemory  = 19 * 1024
	argonThreads = 1
	argonKeyLen  = 32
)

// HashPassword returns the argon2id hash of a password in PHC form.
func HashPassword(password string) (string, error) {
	if len(password) < 12 {
		return "", errors.New("password: at least 12 characters")
	}
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(password), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads,
		b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

var b64 = base64.RawStdEncoding

// CheckPassword compares a password with a PHC argon2id hash in constant
// time.
func CheckPassword(hash, password string) bool {
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false
	}
	var m, t uint32
	var p uint8
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil || t == 0 || p == 0 || m > 1<<21 {
		return false
	}
	salt, err := b64.DecodeString(parts[4])
	if err != nil {
		return false
	}
	want, err := b64.DecodeString(parts[5])
	if err != nil || len(want) == 0 || len(want) > 64 {
		return false
	}
	got := argon2.IDKey([]byte(password), salt, t, m, p, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1
}

// NewPassword makes a random password for bootstrapped administrators.
func NewPassword() (string, error) {
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}
