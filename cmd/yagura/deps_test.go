package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// goTool finds the go command that runs this test.
func goTool(t *testing.T) string {
	t.Helper()
	if p := filepath.Join(runtime.GOROOT(), "bin", "go"); fileExists(p) {
		return p
	}
	p, err := exec.LookPath("go")
	if err != nil {
		t.Fatal("go command not found; these tests build the binary")
	}
	return p
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func deps(t *testing.T, tags string) []string {
	t.Helper()
	args := []string{"list", "-deps"}
	if tags != "" {
		args = append(args, "-tags", tags)
	}
	cmd := exec.Command(goTool(t), append(args, ".")...)
	// The agent builds without cgo; the manager needs it (DuckDB).
	cgo := "1"
	if tags == "agentonly" {
		cgo = "0"
	}
	cmd.Env = append(os.Environ(), "CGO_ENABLED="+cgo)
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list (tags %q): %v\n%s", tags, err, ee.Stderr)
		}
		t.Fatalf("go list (tags %q): %v", tags, err)
	}
	return strings.Fields(string(out))
}

// forbiddenInAgent are packages the slim agent must never link: the
// manager's stores, API and their heavy dependencies, and test code.
var forbiddenInAgent = []string{
	"github.com/yagura/yagura/internal/server",
	"github.com/yagura/yagura/internal/store",
	"github.com/yagura/yagura/internal/api",
	"github.com/yagura/yagura/internal/gateway",
	"github.com/yagura/yagura/internal/fleet",
	"github.com/yagura/yagura/internal/ctl",
	"github.com/yagura/yagura/internal/sim",
	"github.com/yagura/yagura/internal/telemetry",
	"github.com/yagura/yagura/internal/alerting",
	"github.com/yagura/yagura/internal/outbox",
	"github.com/yagura/yagura/internal/notify",
	"modernc.org/sqlite",
	"github.com/jackc/pgx",
	"github.com/pressly/goose",
	"github.com/danielgtaylor/huma",
	"github.com/duckdb/",
	"github.com/ClickHouse/",
	"github.com/prometheus/client_golang",
	"testing",
}

func TestAgentBuildExcludesManager(t *testing.T) {
	agent := deps(t, "agentonly")
	for _, p := range agent {
		for _, f := range forbiddenInAgent {
			if p == f || strings.HasPrefix(p, f+"/") || (strings.HasSuffix(f, "/") && strings.HasPrefix(p, f)) {
				t.Errorf("agent-only build links %s (forbidden: %s)", p, f)
			}
		}
	}
	// The check must be able to fail: the full build does link the manager.
	full := strings.Join(deps(t, ""), "\n")
	for _, want := range []string{"github.com/yagura/yagura/internal/server", "modernc.org/sqlite", "github.com/jackc/pgx/v5", "github.com/duckdb/duckdb-go/v2", "github.com/ClickHouse/clickhouse-go/v2"} {
		if !strings.Contains(full, want) {
			t.Errorf("full build does not link %s: the forbidden list is stale", want)
		}
	}
}

func TestAgentBinaryIsStatic(t *testing.T) {
	out := filepath.Join(t.TempDir(), "yagura-agent")
	cmd := exec.Command(goTool(t), "build", "-tags", "agentonly", "-trimpath", "-ldflags", "-s -w", "-o", out, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build agent: %v\n%s", err, b)
	}
	v, err := exec.Command(out, "version").Output()
	if err != nil || !strings.Contains(string(v), "agent-only build") {
		t.Fatalf("agent version: %q, %v", v, err)
	}
	if b, err := exec.Command(out, "server").CombinedOutput(); err == nil {
		t.Fatalf("agent-only binary runs `server`: %s", b)
	}
	if st, err := os.Stat(out); err == nil {
		t.Logf("agent-only binary: %.1f MiB", float64(st.Size())/(1<<20))
	}
	// A static binary has no program interpreter (PT_INTERP); `file` may
	// be missing, so read the ELF header ourselves.
	if runtime.GOOS == "linux" && hasInterp(t, out) {
		t.Error("agent-only binary is dynamically linked")
	}
}

// TestPackageDocs: every package says what it provides (STYLE.md).
func TestPackageDocs(t *testing.T) {
	cmd := exec.Command(goTool(t), "list", "-f", "{{.ImportPath}}\t{{.Doc}}", "github.com/yagura/yagura/...")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		path, doc, _ := strings.Cut(line, "\t")
		n++
		if strings.TrimSpace(doc) == "" {
			t.Errorf("package %s has no package doc comment", path)
		}
	}
	if n < 10 {
		t.Fatalf("only %d packages listed; the check is not looking at the module", n)
	}
}
