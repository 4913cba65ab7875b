// Package credentials provides the small JSON file that tells `yagura ctl`
// which manager to talk to, how to recognise it (CA fingerprint) and how to
// authenticate. The manager writes one for the bootstrap administrator; the
// file holds a secret and is always mode 0600.
package credentials

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// File is the credentials file's content.
type File struct {
	URL           string `json:"url"`
	CAFingerprint string `json:"ca_fingerprint"`
	User          string `json:"user,omitempty"`
	// Password signs User in (OAuth2 password grant); Token is a bearer
	// token used as is. One of them is needed.
	Password string `json:"password,omitempty"`
	Token    string `json:"token,omitempty"`
	// RefreshToken and Expires are kept by `yagura ctl login`: the access
	// token is refreshed (and the refresh token rotated) when it expires.
	RefreshToken string    `json:"refresh_token,omitempty"`
	Expires      time.Time `json:"expires,omitempty"`
	Note         string    `json:"note,omitempty"`
}

// Load reads a credentials file, refusing one that others can read.
func Load(path string) (*File, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("credentials file %s is readable by others (mode %o); run: chmod 600 %s", path, st.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var f File
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("credentials file %s: %w", path, err)
	}
	if f.URL == "" || (f.Token == "" && (f.User == "" || f.Password == "")) {
		return nil, fmt.Errorf("credentials file %s: url and either token or user and password are required", path)
	}
	return &f, nil
}

// Save writes a credentials file with mode 0600, replacing any old one.
func Save(path string, f *File) error {
	if f.URL == "" || (f.Token == "" && (f.User == "" || f.Password == "")) {
		return errors.New("credentials: url and either token or user and password are required")
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("write credentials: %w", err)
	}
	// CreateTemp makes a fresh 0600 file, so the secret is never, even
	// briefly, in a file others can read.
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write credentials: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("write credentials: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write credentials: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write credentials: %w", err)
	}
	return nil
}
