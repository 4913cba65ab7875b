package ctl

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// export streams an export of what ("events", "flows") from the API at
// path to standard output, or to the file out when it is set and not "-".
// An existing file is replaced only with force.
func (g *globals) export(cmd *cobra.Command, what, path string, q url.Values, format, out string, force bool) error {
	toFile := out != "" && out != "-"
	if toFile && !force {
		if _, err := os.Lstat(out); err == nil {
			return fmt.Errorf("%s exists; choose another name with -O or pass --force to replace it", out)
		}
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	resp, err := c.Stream(cmd.Context(), path, q)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if !toFile {
		var tail tailWriter
		if _, err := io.Copy(io.MultiWriter(cmd.OutOrStdout(), &tail), resp.Body); err != nil {
			return fmt.Errorf("export %s: %w", what, err)
		}
		return tail.complete(what, format)
	}
	return exportToFile(cmd, resp.Body, what, out, format)
}

// exportToFile copies an export into a temporary file beside out and
// renames it into place only when the export is complete.
func exportToFile(cmd *cobra.Command, body io.Reader, what, out, format string) error {
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	stderr := cmd.ErrOrStderr()
	// The total is unknown until the end: a spinner with the bytes so far.
	// Not drawn into logs and pipes, where carriage returns are noise.
	bar := progressbar.NewOptions64(-1,
		progressbar.OptionSetWriter(stderr),
		progressbar.OptionSetVisibility(isTerminal(stderr)),
		progressbar.OptionSetDescription("exporting "+what),
		progressbar.OptionShowBytes(true),
		progressbar.OptionSpinnerType(14),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)
	var tail tailWriter
	n, err := io.Copy(io.MultiWriter(tmp, bar, &tail), body)
	_ = bar.Finish() // also stops the spinner's goroutine
	if err != nil {
		tmp.Close()
		return fmt.Errorf("export %s: %w (%s not written)", what, err, out)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := tail.complete(what, format); err != nil {
		return fmt.Errorf("%w (%s not written)", err, out)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "%s: %s\n", out, byteSize(n))
	return nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// tailWriter keeps the end of a stream, to tell a complete export from one
// the manager cut short (see api.exportEvents and api.exportFlows: a
// truncated CSV lacks its last newline; truncated JSON lines end with an
// {"error": …} object).
type tailWriter struct {
	n    int64
	tail []byte
}

const tailSize = 1024

func (t *tailWriter) Write(p []byte) (int, error) {
	t.n += int64(len(p))
	if len(p) >= tailSize {
		t.tail = append(t.tail[:0], p[len(p)-tailSize:]...)
		return len(p), nil
	}
	t.tail = append(t.tail, p...)
	if len(t.tail) > tailSize {
		t.tail = append(t.tail[:0], t.tail[len(t.tail)-tailSize:]...)
	}
	return len(p), nil
}

// complete says whether the export of what ("events", "flows") that went
// through t is whole.
func (t *tailWriter) complete(what, format string) error {
	if t.n == 0 {
		if format == "csv" {
			return fmt.Errorf("export %s: the manager sent nothing, not even the CSV header; see its log", what)
		}
		return nil
	}
	if t.tail[len(t.tail)-1] != '\n' {
		return fmt.Errorf("export %s: the export stopped early (its last line is incomplete); the manager's log says why", what)
	}
	if format == "json" {
		body := t.tail[:len(t.tail)-1]
		last := body[bytes.LastIndexByte(body, '\n')+1:]
		var e struct {
			Error string `json:"error"`
		}
		if bytes.HasPrefix(last, []byte(`{"error":`)) && json.Unmarshal(last, &e) == nil && e.Error != "" {
			return fmt.Errorf("export %s: %s; the manager's log says why", what, e.Error)
		}
	}
	return nil
}
