package api

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/google/uuid"

	"github.com/yagura/yagura/internal/auth"
	"github.com/yagura/yagura/internal/secret"
	"github.com/yagura/yagura/internal/store"
)

// User is a user as the API shows it (never the password hash).
type User struct {
	Username   string     `json:"username"`
	Role       string     `json:"role" enum:"admin,operator,auditor"`
	CreatedAt  time.Time  `json:"created_at"`
	DisabledAt *time.Time `json:"disabled_at,omitempty"`
}

func userOut(u store.User) User {
	return User{Username: u.Username, Role: u.Role, CreatedAt: u.CreatedAt.UTC(), DisabledAt: ptime(u.DisabledAt)}
}

// UserCreate is the body of a user creation.
type UserCreate struct {
	Username string `json:"username" minLength:"1" maxLength:"64" pattern:"^[A-Za-z0-9._@-]+$"`
	Role     string `json:"role" enum:"admin,operator,auditor"`
	// No length rules in the schema: a refused value would be echoed in
	// the error. HashPassword checks it.
	Password string `json:"password" doc:"At least 12 characters."`
}

// UserUpdate changes a user; absent fields stay.
type UserUpdate struct {
	Role     *string `json:"role,omitempty" enum:"admin,operator,auditor"`
	Password *string `json:"password,omitempty" doc:"At least 12 characters."`
	Disabled *bool   `json:"disabled,omitempty" doc:"Disabling signs the user out everywhere."`
}

// APIClient is an API client as the API shows it.
type APIClient struct {
	ID          string     `json:"client_id"`
	Secret      string     `json:"client_secret,omitempty" doc:"Returned once, at creation."`
	Description string     `json:"description,omitempty"`
	Role        string     `json:"role" enum:"admin,operator,auditor"`
	CreatedBy   string     `json:"created_by"`
	CreatedAt   time.Time  `json:"created_at"`
	ExpiresAt   *time.Time `json:"expires_at,omitempty"`
	RevokedAt   *time.Time `json:"revoked_at,omitempty"`
}

func clientOut(c store.APIClient) APIClient {
	return APIClient{ID: c.ID, Description: c.Description, Role: c.Role, CreatedBy: c.CreatedBy, CreatedAt: c.CreatedAt.UTC(),
		ExpiresAt: ptime(c.ExpiresAt), RevokedAt: ptime(c.RevokedAt)}
}

// APIClientCreate is the body of an API client creation.
type APIClientCreate struct {
	Description string `json:"description,omitempty" maxLength:"200"`
	Role        string `json:"role" enum:"admin,operator,auditor"`
	ExpiresIn   string `json:"expires_in,omitempty" doc:"Lifetime (\"720h\"); empty: no expiry."`
}

// Me describes the caller.
type Me struct {
	Subject string `json:"subject"`
	Role    string `json:"role"`
}

func (a *API) registerAccounts() {
	register(a, PermMeRead, huma.Operation{
		OperationID: "get-me", Method: http.MethodGet, Path: "/api/v1/me",
		Summary: "Who am I", Tags: []string{"Users"},
	}, func(ctx context.Context, _ *struct{}) (*struct{ Body Me }, error) {
		p := Who(ctx)
		return &struct{ Body Me }{Body: Me{Subject: p.Subject, Role: p.Role}}, nil
	})
	register(a, PermUsersRead, huma.Operation{
		OperationID: "list-users", Method: http.MethodGet, Path: "/api/v1/users",
		Summary: "List users", Tags: []string{"Users"},
	}, func(ctx context.Context, _ *struct{}) (*struct {
		Body struct {
			Items []User `json:"items"`
		}
	}, error) {
		us, err := a.d.Store.ListUsers(ctx)
		if err != nil {
			return nil, a.storeErr("users", err)
		}
		out := &struct {
			Body struct {
				Items []User `json:"items"`
			}
		}{}
		out.Body.Items = make([]User, 0, len(us))
		for _, u := range us {
			out.Body.Items = append(out.Body.Items, userOut(u))
		}
		return out, nil
	})
	register(a, PermUsersWrite, huma.Operation{
		OperationID: "create-user", Method: http.MethodPost, Path: "/api/v1/users",
		Summary: "Create a user", Tags: []string{"Users"}, DefaultStatus: http.StatusCreated,
	}, func(ctx context.Context, in *struct{ Body UserCreate }) (*struct{ Body User }, error) {
		if len(in.Body.Password) > 256 {
			return nil, huma.Error422UnprocessableEntity("password: at most 256 characters")
		}
		hash, err := auth.HashPassword(in.Body.Password)
		if err != nil {
			return nil, huma.Error422UnprocessableEntity(err.Error())
		}
		id, _ := uuid.NewV7()
		u := store.User{ID: id.String(), Username: in.Body.Username, PasswordHash: hash, Role: in.Body.Role, CreatedAt: a.d.Now()}
		if err := a.d.Store.CreateUser(ctx, u); err != nil {
			if errors.Is(err, store.ErrConflict) {
				return nil, huma.Error409Conflict("user " + u.Username + " exists")
			}
			return nil, a.storeErr("user", err)
		}
		note(ctx, u.Username, map[string]string{"username": u.Username, "role": u.Role})
		return &struct{ Body User }{Body: userOut(u)}, nil
	})
	register(a, PermUsersWrite, huma.Operation{
		OperationID: "update-user", Method: http.MethodPatch, Path: "/api/v1/users/{username}",
		Summary: "Change a user's role or password, or disable the user", Tags: []string{"Users"},
		Description: "A new password or disabling signs the user out everywhere.",
	}, func(ctx context.Context, in *struct {
		Username string `path:"username" maxLength:"64"`
		Body     UserUpdate
	}) (*struct{ Body User }, error) {
		u, err := a.d.Store.UserByName(ctx, in.Username)
		if err != nil {
			return nil, a.storeErr("user "+in.Username, err)
		}
		changes := map[string]any{}
		signOut := false
		demoted := false
		if in.Body.Role != nil {
			demoted = u.Role == auth.RoleAdmin && *in.Body.Role != auth.RoleAdmin
			u.Role = *in.Body.Role
			changes["role"] = u.Role
			signOut = true // tokens carry the role they were issued with
		}
		if in.Body.Password != nil {
			if len(*in.Body.Password) > 256 {
				return nil, huma.Error422UnprocessableEntity("password: at most 256 characters")
			}
			if u.PasswordHash, err = auth.HashPassword(*in.Body.Password); err != nil {
				return nil, huma.Error422UnprocessableEntity(err.Error())
			}
			changes["password"] = "changed"
			signOut = true
		}
		if in.Body.Disabled != nil {
			u.DisabledAt = time.Time{}
			if *in.Body.Disabled {
				u.DisabledAt = a.d.Now()
				signOut = true
			}
			changes["disabled"] = *in.Body.Disabled
		}
		if err := a.d.Store.UpdateUser(ctx, u); err != nil {
			return nil, a.storeErr("user "+in.Username, err)
		}
		if signOut {
			if err := a.d.Store.RevokeSubjectTokens(ctx, "user:"+u.Username, a.d.Now()); err != nil {
				return nil, a.storeErr("user "+in.Username, err)
			}
		}
		if demoted || !u.DisabledAt.IsZero() {
			// An administrator about to lose the role must not keep it
			// through API clients made beforehand.
			n, err := a.revokeClientsOf(ctx, "user:"+u.Username)
			if err != nil {
				return nil, a.storeErr("user "+in.Username, err)
			}
			if n > 0 {
				changes["api_clients_revoked"] = n
			}
		}
		note(ctx, u.Username, changes)
		return &struct{ Body User }{Body: userOut(u)}, nil
	})
	register(a, PermClientsRead, huma.Operation{
		OperationID: "list-api-clients", Method: http.MethodGet, Path: "/api/v1/api-clients",
		Summary: "List API clients", Tags: []string{"API clients"},
	}, func(ctx context.Context, _ *struct{}) (*struct {
		Body struct {
			Items []APIClient `json:"items"`
		}
	}, error) {
		cs, err := a.d.Store.ListAPIClients(ctx)
		if err != nil {
			return nil, a.storeErr("API clients", err)
		}
		out := &struct {
			Body struct {
				Items []APIClient `json:"items"`
			}
		}{}
		out.Body.Items = make([]APIClient, 0, len(cs))
		for _, c := range cs {
			out.Body.Items = append(out.Body.Items, clientOut(c))
		}
		return out, nil
	})
	register(a, PermClientsWrite, huma.Operation{
		OperationID: "create-api-client", Method: http.MethodPost, Path: "/api/v1/api-clients",
		Summary: "Create an API client (client_credentials grant)", Tags: []string{"API clients"}, DefaultStatus: http.StatusCreated,
		Description: "The secret is returned once; only its hash is stored.",
	}, func(ctx context.Context, in *struct{ Body APIClientCreate }) (*struct{ Body APIClient }, error) {
		now := a.d.Now()
		c := store.APIClient{Description: in.Body.Description, Role: in.Body.Role, CreatedBy: Who(ctx).Subject, CreatedAt: now}
		if in.Body.ExpiresIn != "" {
			d, err := time.ParseDuration(in.Body.ExpiresIn)
			if err != nil || d < time.Minute {
				return nil, huma.Error422UnprocessableEntity("invalid API client", &huma.ErrorDetail{
					Location: "body.expires_in", Value: in.Body.ExpiresIn, Message: `want a duration of at least 1m, such as "720h"`})
			}
			c.ExpiresAt = now.Add(d)
		}
		id, _ := uuid.NewV7()
		c.ID = "ycl_" + strings.ReplaceAll(id.String(), "-", "")
		plain, hash, err := secret.New("ycs")
		if err != nil {
			return nil, err
		}
		c.SecretHash = hash
		if err := a.d.Store.CreateAPIClient(ctx, c); err != nil {
			return nil, a.storeErr("API client", err)
		}
		note(ctx, c.ID, map[string]string{"role": c.Role, "description": c.Description})
		out := clientOut(c)
		out.Secret = plain
		return &struct{ Body APIClient }{Body: out}, nil
	})
	register(a, PermClientsWrite, huma.Operation{
		OperationID: "revoke-api-client", Method: http.MethodPost, Path: "/api/v1/api-clients/{id}/revoke",
		Summary: "Revoke an API client and its tokens", Tags: []string{"API clients"},
	}, func(ctx context.Context, in *struct {
		ID string `path:"id" maxLength:"64"`
	}) (*struct{}, error) {
		if err := a.d.Store.RevokeAPIClient(ctx, in.ID, a.d.Now()); err != nil {
			return nil, a.changeErr("API client "+in.ID, "revoked", err)
		}
		return nil, nil
	})
}

// revokeClientsOf revokes the API clients a user created.
func (a *API) revokeClientsOf(ctx context.Context, subject string) (int, error) {
	cs, err := a.d.Store.ListAPIClients(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, c := range cs {
		if c.CreatedBy == subject && c.RevokedAt.IsZero() {
			if err := a.d.Store.RevokeAPIClient(ctx, c.ID, a.d.Now()); err != nil && !errors.Is(err, store.ErrConflict) {
				return n, err
			}
			n++
		}
	}
	return n, nil
}
