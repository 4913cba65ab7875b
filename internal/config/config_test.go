package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// testConfig has the shapes a real configuration uses: nested sections, a
// duration, an int, a bool, a list and a key with a hyphen.
type testConfig struct {
	Name   string     `koanf:"name"`
	Server testServer `koanf:"server"`
	Log    testLog    `koanf:"log"`
}

type testServer struct {
	Listen     string        `koanf:"listen"`
	Timeout    time.Duration `koanf:"timeout"`
	Workers    int           `koanf:"workers"`
	Allowed    []string      `koanf:"allowed"`
	AdminToken string        `koanf:"admin-token"`
	TLS        testTLS       `koanf:"tls"`
}

type testTLS struct {
	Enabled bool `koanf:"enabled"`
}

type testLog struct {
	Level string `koanf:"level"`
}

func defaultTestConfig() testConfig {
	return testConfig{
		Name: "yagura",
		Server: testServer{
			Listen:  ":8443",
			Timeout: 30 * time.Second,
			Workers: 4,
			Allowed: []string{"10.0.0.0/8"},
			TLS:     testTLS{Enabled: true},
		},
		Log: testLog{Level: "info"},
	}
}

// fullConfig is testdata/full.yaml decoded over the defaults.
func fullConfig() testConfig {
	return testConfig{
		Name: "edge-01",
		Server: testServer{
			Listen:     "0.0.0.0:9443",
			Timeout:    90 * time.Second,
			Workers:    16,
			Allowed:    []string{"192.0.2.0/24", "2001:db8::/32"},
			AdminToken: "s3cret",
			TLS:        testTLS{Enabled: false},
		},
		Log: testLog{Level: "debug"},
	}
}

func TestLoad(t *testing.T) {
	full := filepath.Join("testdata", "full.yaml")
	tests := []struct {
		name string
		src  Source
		want func(c *testConfig)
	}{
		{
			name: "defaults only",
			want: func(c *testConfig) {},
		},
		{
			name: "file",
			src:  Source{File: full},
			want: func(c *testConfig) { *c = fullConfig() },
		},
		{
			name: "empty sections keep their defaults",
			src:  Source{File: filepath.Join("testdata", "empty-sections.yaml")},
			want: func(c *testConfig) {},
		},
		{
			name: "environment over an empty section",
			src: Source{
				File:    filepath.Join("testdata", "empty-sections.yaml"),
				Environ: []string{"YAGURA_SERVER_WORKERS=9", "YAGURA_LOG_LEVEL=warn"},
			},
			want: func(c *testConfig) {
				c.Server.Workers = 9
				c.Log.Level = "warn"
			},
		},
		{
			// A bare number is refused for a duration (see
			// duration-number.bad.yaml), but zero needs no unit.
			name: "zero duration without a unit",
			src:  Source{File: filepath.Join("testdata", "duration-zero.yaml")},
			want: func(c *testConfig) { c.Server.Timeout = 0 },
		},
		{
			name: "environment over default",
			src: Source{Environ: []string{
				"YAGURA_NAME=from-env",
				"YAGURA_SERVER_TIMEOUT=1m30s",
				"YAGURA_SERVER_WORKERS=7",
				"YAGURA_SERVER_TLS_ENABLED=false",
				"YAGURA_SERVER_ADMIN_TOKEN=t0k",
			}},
			want: func(c *testConfig) {
				c.Name = "from-env"
				c.Server.Timeout = 90 * time.Second
				c.Server.Workers = 7
				c.Server.TLS.Enabled = false
				c.Server.AdminToken = "t0k"
			},
		},
		{
			name: "flag over default",
			src: Source{Flags: map[string]string{
				"server.timeout":     "2h",
				"server.workers":     "0",
				"server.tls.enabled": "false",
				"server.allowed":     "192.0.2.1/32, 192.0.2.2/32",
			}},
			want: func(c *testConfig) {
				c.Server.Timeout = 2 * time.Hour
				c.Server.Workers = 0
				c.Server.TLS.Enabled = false
				c.Server.Allowed = []string{"192.0.2.1/32", "192.0.2.2/32"}
			},
		},
		{
			// Each layer sets fewer keys than the one below, so every layer
			// shows through somewhere.
			name: "flag over environment over file over default",
			src: Source{
				File: filepath.Join("testdata", "precedence.yaml"),
				Environ: []string{
					"YAGURA_SERVER_TIMEOUT=2m",
					"YAGURA_SERVER_WORKERS=3",
				},
				Flags: map[string]string{"server.workers": "5"},
			},
			want: func(c *testConfig) {
				c.Name = "from-file"               // file
				c.Server.Timeout = 2 * time.Minute // environment
				c.Server.Workers = 5               // flag
				// server.listen and the rest keep their defaults.
			},
		},
		{
			name: "lists are comma-separated in the environment and flags",
			src: Source{
				Environ: []string{"YAGURA_SERVER_ALLOWED=192.0.2.0/24, 198.51.100.0/24 ,2001:db8::/32"},
			},
			want: func(c *testConfig) {
				c.Server.Allowed = []string{"192.0.2.0/24", "198.51.100.0/24", "2001:db8::/32"}
			},
		},
		{
			name: "an empty list value empties the list",
			src:  Source{File: full, Flags: map[string]string{"server.allowed": ""}},
			want: func(c *testConfig) {
				*c = fullConfig()
				c.Server.Allowed = []string{}
			},
		},
		{
			name: "unknown and malformed environment variables are ignored",
			src: Source{Environ: []string{
				"YAGURA_TOKEN=for-ctl",
				"YAGURA_SERVER_NOPE=1",
				"YAGURA_NAME", // no "="
				"NAME=not-ours",
				"yagura_name=lower-case",
				"PATH=/usr/bin",
			}},
			want: func(c *testConfig) {},
		},
		{
			name: "custom prefix",
			src: Source{
				EnvPrefix: "YAGURA_AGENT_",
				Environ:   []string{"YAGURA_NAME=manager", "YAGURA_AGENT_NAME=agent"},
			},
			want: func(c *testConfig) { c.Name = "agent" },
		},
		{
			name: "the default prefix is not read under a custom one",
			src: Source{
				EnvPrefix: "YAGURA_AGENT_",
				Environ:   []string{"YAGURA_SERVER_WORKERS=12"},
			},
			want: func(c *testConfig) {},
		},
		{
			name: "empty environment value for a string",
			src:  Source{File: full, Environ: []string{"YAGURA_SERVER_ADMIN_TOKEN="}},
			want: func(c *testConfig) {
				*c = fullConfig()
				c.Server.AdminToken = ""
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := defaultTestConfig()
			if err := Load(&got, tt.src); err != nil {
				t.Fatalf("Load: %v", err)
			}
			want := defaultTestConfig()
			tt.want(&want)
			if diff := cmp.Diff(got, want); diff != "" {
				t.Errorf("Load (-got +want):\n%s", diff)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name    string
		src     Source
		wantErr string
	}{
		{
			name:    "flag for an unknown key",
			src:     Source{Flags: map[string]string{"server.nope": "1"}},
			wantErr: `flag for unknown key "server.nope"`,
		},
		{
			name:    "flag for a section",
			src:     Source{Flags: map[string]string{"server": "1"}},
			wantErr: `flag for unknown key "server"`,
		},
		{
			name:    "bad duration in a flag",
			src:     Source{Flags: map[string]string{"server.timeout": "soon"}},
			wantErr: "'server.timeout' time: invalid duration",
		},
		{
			name:    "bad int in the environment",
			src:     Source{Environ: []string{"YAGURA_SERVER_WORKERS=many"}},
			wantErr: "'server.workers' cannot parse value as 'int'",
		},
		{
			name:    "bad bool in the environment",
			src:     Source{Environ: []string{"YAGURA_SERVER_TLS_ENABLED=maybe"}},
			wantErr: "'server.tls.enabled' cannot parse value as 'bool'",
		},
		{
			name:    "missing file",
			src:     Source{File: filepath.Join("testdata", "does-not-exist.yaml")},
			wantErr: "config file testdata/does-not-exist.yaml: ",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := defaultTestConfig()
			err := Load(&cfg, tt.src)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Load error = %v; want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestLoadNotAStruct(t *testing.T) {
	n := 3
	if err := Load(&n, Source{}); err == nil || !strings.Contains(err.Error(), "want a struct") {
		t.Errorf("Load(*int) error = %v; want one containing %q", err, "want a struct")
	}
}

// TestLoadBadFiles loads each testdata/NAME.bad.yaml and expects an error
// containing the text of testdata/NAME.bad.err: adding a case is adding the
// two files.
func TestLoadBadFiles(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.bad.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no testdata/*.bad.yaml files")
	}
	errFiles, err := filepath.Glob(filepath.Join("testdata", "*.bad.err"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range errFiles {
		if _, err := os.Stat(strings.TrimSuffix(e, ".err") + ".yaml"); err != nil {
			t.Errorf("%s has no .bad.yaml partner: %v", e, err)
		}
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".bad.yaml")
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(strings.TrimSuffix(f, ".yaml") + ".err")
			if err != nil {
				t.Fatalf("expected error text: %v", err)
			}
			want := strings.TrimRight(string(b), "\n")
			if want == "" {
				t.Fatalf("%s.bad.err is empty", name)
			}
			cfg := defaultTestConfig()
			err = Load(&cfg, Source{File: f})
			if err == nil {
				t.Fatalf("Load(%s) succeeded; want an error containing %q", f, want)
			}
			if !strings.Contains(err.Error(), want) {
				t.Errorf("Load(%s) error:\n%v\nwant it to contain:\n%s", f, err, want)
			}
		})
	}
}

func TestDump(t *testing.T) {
	tests := []struct {
		name    string
		cfg     testConfig
		secrets []string
		want    string
	}{
		{
			name:    "secret redacted",
			cfg:     fullConfig(),
			secrets: []string{"server.admin-token"},
			want: `log:
    level: debug
name: edge-01
server:
    admin-token: <redacted>
    allowed:
        - 192.0.2.0/24
        - 2001:db8::/32
    listen: 0.0.0.0:9443
    timeout: 1m30s
    tls:
        enabled: false
    workers: 16
`,
		},
		{
			name:    "empty secret shown as empty",
			cfg:     defaultTestConfig(),
			secrets: []string{"server.admin-token", "no.such.key"},
			want: `log:
    level: info
name: yagura
server:
    admin-token: ""
    allowed:
        - 10.0.0.0/8
    listen: :8443
    timeout: 30s
    tls:
        enabled: true
    workers: 4
`,
		},
		{
			name: "no secrets named",
			cfg:  fullConfig(),
			want: `log:
    level: debug
name: edge-01
server:
    admin-token: s3cret
    allowed:
        - 192.0.2.0/24
        - 2001:db8::/32
    listen: 0.0.0.0:9443
    timeout: 1m30s
    tls:
        enabled: false
    workers: 16
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Dump(&tt.cfg, tt.secrets...)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(got, tt.want); diff != "" {
				t.Errorf("Dump (-got +want):\n%s", diff)
			}
		})
	}
}

// TestDumpReloads checks that a dump is a configuration file that loads
// back to the same configuration.
func TestDumpReloads(t *testing.T) {
	want := fullConfig()
	got := defaultTestConfig()
	roundTrip(t, &want, &got)
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("reloaded dump (-got +want):\n%s", diff)
	}
}

func TestDumpNotAStruct(t *testing.T) {
	if _, err := Dump("text"); err == nil {
		t.Error("Dump(string) succeeded; want an error")
	}
}

func TestFlatten(t *testing.T) {
	cfg := fullConfig()
	want := map[string]any{
		"name":               "edge-01",
		"server.listen":      "0.0.0.0:9443",
		"server.timeout":     "1m30s",
		"server.workers":     16,
		"server.allowed":     []string{"192.0.2.0/24", "2001:db8::/32"},
		"server.admin-token": "s3cret",
		"server.tls.enabled": false,
		"log.level":          "debug",
	}
	for _, arg := range []struct {
		name string
		v    any
	}{{"pointer", &cfg}, {"value", cfg}} {
		t.Run(arg.name, func(t *testing.T) {
			got, err := Flatten(arg.v)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(got, want); diff != "" {
				t.Errorf("Flatten (-got +want):\n%s", diff)
			}
		})
	}

	t.Run("lists are copies", func(t *testing.T) {
		got, err := Flatten(&cfg)
		if err != nil {
			t.Fatal(err)
		}
		got["server.allowed"].([]string)[0] = "changed"
		if cfg.Server.Allowed[0] != "192.0.2.0/24" {
			t.Errorf("changing Flatten's list changed the config: %q", cfg.Server.Allowed)
		}
	})

	t.Run("untagged and unexported fields are left out", func(t *testing.T) {
		type withHidden struct {
			Shown    string `koanf:"shown"`
			Skipped  string `koanf:"-"`
			Untagged string
			hidden   string `koanf:"hidden"`
		}
		got, err := Flatten(withHidden{Shown: "a", Skipped: "b", Untagged: "c", hidden: "d"})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(got, map[string]any{"shown": "a"}); diff != "" {
			t.Errorf("Flatten (-got +want):\n%s", diff)
		}
	})

	t.Run("not a struct", func(t *testing.T) {
		if _, err := Flatten(map[string]any{}); err == nil || !strings.Contains(err.Error(), "want a struct, got map") {
			t.Errorf("Flatten(map) error = %v; want one containing %q", err, "want a struct, got map")
		}
	})
}

func TestEnvName(t *testing.T) {
	tests := []struct {
		prefix, key, want string
	}{
		{"YAGURA_", "name", "YAGURA_NAME"},
		{"YAGURA_", "server.listen", "YAGURA_SERVER_LISTEN"},
		{"YAGURA_", "server.admin-token", "YAGURA_SERVER_ADMIN_TOKEN"},
		{"YAGURA_AGENT_", "server.tls.enabled", "YAGURA_AGENT_SERVER_TLS_ENABLED"},
	}
	for _, tt := range tests {
		if got := EnvName(tt.prefix, tt.key); got != tt.want {
			t.Errorf("EnvName(%q, %q) = %q; want %q", tt.prefix, tt.key, got, tt.want)
		}
	}
}

// roundTrip dumps from, writes the dump to a file and loads it into to.
func roundTrip(t *testing.T, from, to *testConfig) {
	t.Helper()
	dump, err := Dump(from)
	if err != nil {
		t.Fatalf("Dump: %v", err)
	}
	path := filepath.Join(t.TempDir(), "dump.yaml")
	if err := os.WriteFile(path, []byte(dump), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Load(to, Source{File: path}); err != nil {
		t.Fatalf("Load of the dump failed: %v\ndump:\n%s", err, dump)
	}
}

func FuzzLoad(f *testing.F) {
	seeds, err := filepath.Glob(filepath.Join("testdata", "*.yaml"))
	if err != nil {
		f.Fatal(err)
	}
	if len(seeds) == 0 {
		f.Fatal("no testdata/*.yaml seeds")
	}
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{
		"",
		"server: null\n",
		"server:\n  workers: 0x10\n  timeout: 1.5h\n",
		"server:\n  allowed: a, b\n",
		"server:\n  allowed: []\n",
		"name: 12\nserver: {tls: {enabled: 1}}\n",
		"\"server.workers\": 3\n",
		"a: &x {b: 1}\nc: *x\n",
	} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "fuzz.yaml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		got := defaultTestConfig()
		if err := Load(&got, Source{File: path}); err != nil {
			return
		}
		again := defaultTestConfig()
		roundTrip(t, &got, &again)
		// A dump writes an empty list and a missing one alike.
		if diff := cmp.Diff(again, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("dump and reload changed the configuration (-got +want):\n%s\ninput:\n%q", diff, data)
		}
	})
}
