package api

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/danielgtaylor/huma/v2"
)

// exportWriter writes an export as it comes from a store: CSV with a byte
// order mark, or JSON lines. Every 1000 rows it flushes, and extends the
// write deadline, since an export may stream for longer than the server's
// write timeout, which is meant for ordinary answers.
type exportWriter struct {
	w       http.ResponseWriter
	flusher http.Flusher
	extend  func()
	cw      *csv.Writer // nil for JSON lines
	enc     *json.Encoder
	n       int
}

// newExportWriter sets the headers for format ("csv" or "json") and file
// name base (".csv" or ".jsonl" is added), and writes the CSV header.
func newExportWriter(hctx huma.Context, format, base string, csvHeader []string) *exportWriter {
	w := hctx.BodyWriter()
	x := &exportWriter{extend: func() {}, enc: json.NewEncoder(w)}
	x.flusher, _ = w.(http.Flusher)
	if _, rw := unwrapHTTP(hctx); rw != nil {
		rc := http.NewResponseController(rw)
		x.extend = func() { _ = rc.SetWriteDeadline(time.Now().Add(time.Minute)) }
	}
	x.extend()
	if format == "json" {
		hctx.SetHeader("Content-Type", "application/x-ndjson")
		hctx.SetHeader("Content-Disposition", `attachment; filename="`+base+`.jsonl"`)
		return x
	}
	hctx.SetHeader("Content-Type", "text/csv; charset=utf-8")
	hctx.SetHeader("Content-Disposition", `attachment; filename="`+base+`.csv"`)
	_, _ = w.Write([]byte("\ufeff"))
	x.cw = csv.NewWriter(w)
	_ = x.cw.Write(csvHeader)
	return x
}

// csv says whether rows go out as CSV (writeCSV) rather than JSON lines
// (writeJSON).
func (x *exportWriter) csv() bool { return x.cw != nil }

func (x *exportWriter) writeCSV(row []string) error {
	x.n++
	if x.n%1000 == 0 {
		x.extend()
	}
	if err := x.cw.Write(row); err != nil {
		return err
	}
	if x.n%1000 == 0 {
		x.cw.Flush()
		if x.flusher != nil {
			x.flusher.Flush()
		}
		return x.cw.Error()
	}
	return nil
}

func (x *exportWriter) writeJSON(v any) error {
	x.n++
	if x.n%1000 == 0 {
		x.extend()
	}
	return x.enc.Encode(v)
}

// finish ends the export of what ("events", "flows") with err from store
// (as users know it: "telemetry store", "flow store"). Once the first byte
// is out the status cannot change, so a failure midway is logged and the
// response aborted (the client sees the body cut off, not a clean end);
// JSON lines first get an {"error": …} object.
func (x *exportWriter) finish(ctx context.Context, log *slog.Logger, what, store string, err error) {
	if x.cw != nil {
		x.cw.Flush()
	}
	if err != nil && ctx.Err() == nil {
		log.Error("export "+what, "after", x.n, "err", err)
		if x.cw == nil {
			_ = x.enc.Encode(map[string]string{"error": "export stopped after " + strconv.Itoa(x.n) + " " + what + ": the " + store + " failed"})
			// Out before the abort, which drops whatever is still buffered.
			if x.flusher != nil {
				x.flusher.Flush()
			}
		}
		// End the response without its final chunk, so no client can take
		// a cut-off export for a whole one.
		panic(http.ErrAbortHandler)
	}
}
