package credentials

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func sample() *File {
	return &File{
		URL:           "https://manager.example:8443",
		CAFingerprint: strings.Repeat("ab", 32),
		User:          "admin",
		Token:         "yagura_secret_token",
		Note:          "written by a test",
	}
}

// writeMode writes b to path with exactly mode perm, whatever the umask.
func writeMode(t *testing.T, path string, b []byte, perm os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, b, perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, perm); err != nil {
		t.Fatal(err)
	}
}

func wantMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Mode().Perm(); got != want {
		t.Errorf("%s has mode %o; want %o", path, got, want)
	}
}

func TestSaveMode(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, path string)
	}{
		{
			name:  "new file",
			setup: func(t *testing.T, path string) {},
		},
		{
			name: "replaces a 0644 file",
			setup: func(t *testing.T, path string) {
				writeMode(t, path, []byte(`{"url":"old"}`), 0o644)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "credentials.json")
			tt.setup(t, path)
			if err := Save(path, sample()); err != nil {
				t.Fatalf("Save: %v", err)
			}
			wantMode(t, path, 0o600)
			if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".credentials.json.*")); len(left) > 0 {
				t.Errorf("temporary files left behind: %v", left)
			}
			got, err := Load(path)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if diff := cmp.Diff(got, sample()); diff != "" {
				t.Errorf("Load after Save (-got +want):\n%s", diff)
			}
		})
	}
}

func TestSaveCreatesPrivateFolder(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "config", "yagura")
	path := filepath.Join(dir, "credentials.json")
	if err := Save(path, sample()); err != nil {
		t.Fatalf("Save: %v", err)
	}
	wantMode(t, path, 0o600)
	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	// The umask may take bits away but never adds group or other access.
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		t.Errorf("folder %s has mode %o; want no group or other access", dir, perm)
	}
}

func TestSaveRefusesIncomplete(t *testing.T) {
	tests := []struct {
		name string
		edit func(f *File)
	}{
		{"no url", func(f *File) { f.URL = "" }},
		{"no token", func(f *File) { f.Token = "" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := sample()
			tt.edit(f)
			path := filepath.Join(t.TempDir(), "credentials.json")
			err := Save(path, f)
			if err == nil || !strings.Contains(err.Error(), "url and either token or user and password are required") {
				t.Errorf("Save error = %v; want one containing %q", err, "url and either token or user and password are required")
			}
			if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("Save wrote a file despite the error: %v", err)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	tests := []struct {
		name    string
		content string
		mode    os.FileMode
		want    *File
		wantErr string
	}{
		{
			name:    "complete",
			content: `{"url":"https://m:8443","ca_fingerprint":"abcd","user":"admin","token":"t","note":"n"}`,
			mode:    0o600,
			want:    &File{URL: "https://m:8443", CAFingerprint: "abcd", User: "admin", Token: "t", Note: "n"},
		},
		{
			name:    "owner read only",
			content: `{"url":"https://m:8443","token":"t"}`,
			mode:    0o400,
			want:    &File{URL: "https://m:8443", Token: "t"},
		},
		{
			name:    "readable by everyone",
			content: `{"url":"https://m:8443","token":"t"}`,
			mode:    0o644,
			wantErr: "chmod 600",
		},
		{
			name:    "readable by the group",
			content: `{"url":"https://m:8443","token":"t"}`,
			mode:    0o640,
			wantErr: "is readable by others (mode 640); run: chmod 600",
		},
		{
			name:    "writable by others",
			content: `{"url":"https://m:8443","token":"t"}`,
			mode:    0o602,
			wantErr: "chmod 600",
		},
		{
			name:    "no url",
			content: `{"token":"t"}`,
			mode:    0o600,
			wantErr: "url and either token or user and password are required",
		},
		{
			name:    "no token",
			content: `{"url":"https://m:8443","ca_fingerprint":"abcd"}`,
			mode:    0o600,
			wantErr: "url and either token or user and password are required",
		},
		{
			name:    "not JSON",
			content: "url: https://m:8443\n",
			mode:    0o600,
			wantErr: "credentials file ",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "credentials.json")
			writeMode(t, path, []byte(tt.content), tt.mode)
			got, err := Load(path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Load error = %v; want one containing %q", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), path) {
					t.Errorf("Load error %q does not name the file", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if diff := cmp.Diff(got, tt.want); diff != "" {
				t.Errorf("Load (-got +want):\n%s", diff)
			}
		})
	}
}

func TestLoadMissing(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "none.json"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load of a missing file: %v; want an error wrapping fs.ErrNotExist", err)
	}
}

// FuzzLoad feeds arbitrary bytes to Load: it must not panic, and whatever
// it accepts must survive Save and Load unchanged.
func FuzzLoad(f *testing.F) {
	for _, s := range []string{
		`{"url":"https://m:8443","ca_fingerprint":"abcd","user":"admin","token":"t","note":"n"}`,
		`{"url":"https://m:8443","token":"t"}`,
		`{"url":"","token":""}`,
		`{"url":1}`,
		`null`,
		`[]`,
		``,
	} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		in := filepath.Join(dir, "in.json")
		writeMode(t, in, data, 0o600)
		got, err := Load(in)
		if err != nil {
			return
		}
		if got.URL == "" || got.Token == "" {
			t.Fatalf("Load accepted %q without url or token: %+v", data, got)
		}
		out := filepath.Join(dir, "out.json")
		if err := Save(out, got); err != nil {
			t.Fatalf("Save of a loaded file: %v", err)
		}
		again, err := Load(out)
		if err != nil {
			t.Fatalf("Load of a saved file: %v", err)
		}
		if diff := cmp.Diff(again, got); diff != "" {
			t.Errorf("Save and Load changed the file (-got +want):\n%s", diff)
		}
	})
}
