package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/yagura/yagura/internal/secret"
	"github.com/yagura/yagura/internal/store"
)

// TokenStore keeps issued tokens (only their hashes).
type TokenStore interface {
	SaveOAuthToken(ctx context.Context, t store.OAuthToken) error
	OAuthToken(ctx context.Context, hash, kind string, now time.Time) (store.OAuthToken, error)
	UseRefreshToken(ctx context.Context, hash string, now time.Time) (store.OAuthToken, error)
	RevokeOAuthFamily(ctx context.Context, family string, at time.Time) error
}

// Principal is who a request acts as.
type Principal struct {
	Subject string // user:NAME or client:ID
	Role    string
	// Expires caps the tokens issued (an API client's expiry); zero: none.
	Expires time.Time
}

// Tokens are what a grant returns.
type Tokens struct {
	Access    string
	Refresh   string // empty for client_credentials
	ExpiresIn time.Duration
	Role      string
}

// Issuer issues and checks tokens. Tokens are opaque random strings; the
// store holds their SHA-256, so a stolen database yields no usable token,
// and revocation takes effect on the next request.
type Issuer struct {
	Store      TokenStore
	AccessTTL  time.Duration
	RefreshTTL time.Duration
	// Subjects, if set, is asked on every request whether a user may
	// still act, and with which role: disabling or demoting a user then
	// takes effect at once, even for a token issued in the same instant.
	Subjects Subjects
}

// Subjects knows the current state of users and token families.
type Subjects interface {
	UserByName(ctx context.Context, name string) (store.User, error)
	FamilyRevoked(ctx context.Context, family string) (bool, error)
}

// Kinds of token.
const (
	Access  = "access"
	Refresh = "refresh"
)

// Issue creates an access token (and a refresh token if asked) in a family;
// an empty family starts a new grant.
func (i *Issuer) Issue(ctx context.Context, p Principal, withRefresh bool, family string, now time.Time) (Tokens, error) {
	if family == "" {
		f, err := uuid.NewV7()
		if err != nil {
			return Tokens{}, err
		}
		family = f.String()
	}
	access, ahash, err := secret.New("yaa")
	if err != nil {
		return Tokens{}, err
	}
	exp := now.Add(i.AccessTTL)
	if !p.Expires.IsZero() && p.Expires.Before(exp) {
		exp = p.Expires
	}
	t := store.OAuthToken{Hash: ahash, Kind: Access, Family: family, Subject: p.Subject, Role: p.Role, CreatedAt: now, ExpiresAt: exp}
	if err := i.Store.SaveOAuthToken(ctx, t); err != nil {
		return Tokens{}, err
	}
	out := Tokens{Access: access, ExpiresIn: exp.Sub(now), Role: p.Role}
	if withRefresh {
		refresh, rhash, err := secret.New("yar")
		if err != nil {
			return Tokens{}, err
		}
		t.Hash, t.Kind, t.ExpiresAt = rhash, Refresh, now.Add(i.RefreshTTL)
		if err := i.Store.SaveOAuthToken(ctx, t); err != nil {
			return Tokens{}, err
		}
		out.Refresh = refresh
	}
	// A revocation of the family (logout, reuse detected) that ran while
	// these were being issued must not miss them.
	if i.Subjects != nil {
		if revoked, err := i.Subjects.FamilyRevoked(ctx, family); err == nil && revoked {
			_ = i.Store.RevokeOAuthFamily(ctx, family, now)
			return Tokens{}, ErrUnauthenticated
		}
	}
	return out, nil
}

// Rotate consumes a refresh token and returns who it was issued to and its
// family; the caller checks the subject may still sign in, then Issues the
// next pair in the same family. A reused refresh token revokes the family.
func (i *Issuer) Rotate(ctx context.Context, refresh string, now time.Time) (Principal, string, error) {
	t, err := i.Store.UseRefreshToken(ctx, secret.Hash(refresh), now)
	if err != nil {
		return Principal{}, "", err
	}
	return Principal{Subject: t.Subject, Role: t.Role}, t.Family, nil
}

// ErrUnauthenticated: no valid token.
var ErrUnauthenticated = errors.New("invalid or expired access token")

// Authenticate maps a bearer token to its principal.
func (i *Issuer) Authenticate(ctx context.Context, bearer string, now time.Time) (Principal, error) {
	t, err := i.Store.OAuthToken(ctx, secret.Hash(bearer), Access, now)
	if errors.Is(err, store.ErrTokenInvalid) {
		return Principal{}, ErrUnauthenticated
	}
	if err != nil {
		return Principal{}, fmt.Errorf("check access token: %w", err)
	}
	p := Principal{Subject: t.Subject, Role: t.Role}
	if name, ok := strings.CutPrefix(t.Subject, "user:"); ok && i.Subjects != nil {
		u, err := i.Subjects.UserByName(ctx, name)
		if err != nil || !u.DisabledAt.IsZero() {
			return Principal{}, ErrUnauthenticated
		}
		p.Role = u.Role // the current one, not the one at sign-in
	}
	return p, nil
}

// Revoke ends the grant a token (access or refresh) belongs to. Unknown
// tokens are not an error (RFC 7009 §2.2).
func (i *Issuer) Revoke(ctx context.Context, token string, now time.Time) error {
	h := secret.Hash(token)
	for _, kind := range []string{Access, Refresh} {
		t, err := i.Store.OAuthToken(ctx, h, kind, now)
		if errors.Is(err, store.ErrTokenInvalid) {
			continue
		}
		if err != nil {
			return err
		}
		return i.Store.RevokeOAuthFamily(ctx, t.Family, now)
	}
	return nil
}
