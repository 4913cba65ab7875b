package agent

import (
	"archive/zip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/yagura/yagura/internal/proto"
)

// ErrUninstalled ends Run after an uninstall job: the agent has reported
// success and removed its state and identity.
var ErrUninstalled = errors.New("agent uninstalled by its manager")

// jobRecord is what the agent remembers of a job, durably, so that a job
// delivered again (after a lost report or a restart) is never run twice.
type jobRecord struct {
	Status string          `json:"status"`
	Result json.RawMessage `json:"result,omitempty"`
	FileID string          `json:"file_id,omitempty"`
}

func (a *Agent) loadJob(id string) (*jobRecord, error) {
	b, err := a.q.Meta("job:" + id)
	if err != nil || b == nil {
		return nil, err
	}
	var r jobRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("job record %s: %w", id, err)
	}
	return &r, nil
}

func (a *Agent) saveJob(id string, r *jobRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return a.q.PutMeta("job:"+id, b)
}

// runningJobs are the jobs this process is executing.
type runningJobs struct {
	mu      sync.Mutex
	cancels map[string]context.CancelFunc
	wg      sync.WaitGroup
}

// handleJobs acts on the jobs a heartbeat brought.
func (a *Agent) handleJobs(ctx context.Context, jobs []proto.Job) {
	for _, j := range jobs {
		rec, err := a.loadJob(j.ID)
		if err != nil {
			a.log.Error("read job record", "job", j.ID, "err", err)
			continue
		}
		a.running.mu.Lock()
		cancel, running := a.running.cancels[j.ID]
		a.running.mu.Unlock()
		switch {
		case running:
			if j.Cancelled {
				a.log.Info("job cancelled while running", "job", j.ID)
				cancel()
			}
		case rec != nil && rec.Status == "running":
			// Started by an earlier run of the agent that stopped midway:
			// running it again could do it twice.
			rec = &jobRecord{Status: "failed", Result: mustJSON(map[string]string{"error": "interrupted: the agent stopped while running it"})}
			if err := a.saveJob(j.ID, rec); err == nil {
				a.report(ctx, j.ID, rec)
			}
		case rec != nil && rec.Status == "ended":
			// Ended by the manager before it ran; nothing to report.
		case rec != nil:
			// Finished before; the manager did not get the report.
			a.report(ctx, j.ID, rec)
		case j.Cancelled || time.Now().After(j.ExpiresAt):
			// Not started, and no longer wanted.
		default:
			a.start(ctx, j)
		}
	}
}

func mustJSON(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

// start records the job as running (durably, before anything happens),
// then runs it.
func (a *Agent) start(ctx context.Context, j proto.Job) {
	if err := a.saveJob(j.ID, &jobRecord{Status: "running"}); err != nil {
		a.log.Error("record job start", "job", j.ID, "err", err)
		return
	}
	// Tell the manager first: if it already ended the job (cancelled
	// between delivery and now), do not run it.
	err := a.client.ReportJob(ctx, &proto.JobStatus{V: proto.Version, JobID: j.ID, Status: "running"})
	if IsProblem(err, "job-final") {
		a.log.Info("job ended by the manager before it started; not running it", "job", j.ID)
		_ = a.saveJob(j.ID, &jobRecord{Status: "ended"})
		return
	}
	jctx, cancel := context.WithDeadline(ctx, j.ExpiresAt)
	a.running.mu.Lock()
	a.running.cancels[j.ID] = cancel
	a.running.mu.Unlock()
	a.log.Info("job started", "job", j.ID, "kind", j.Kind)
	a.running.wg.Go(func() {
		defer func() {
			cancel()
			a.running.mu.Lock()
			delete(a.running.cancels, j.ID)
			a.running.mu.Unlock()
		}()
		rec := a.execute(jctx, j)
		if err := a.saveJob(j.ID, rec); err != nil {
			a.log.Error("record job result", "job", j.ID, "err", err)
		}
		a.log.Info("job finished", "job", j.ID, "kind", j.Kind, "status", rec.Status)
		if j.Kind == proto.JobUninstall && rec.Status == "succeeded" {
			// The manager must learn it before the identity goes: retry
			// until it has, or the job expires.
			a.reportUntilAcked(jctx, j.ID, rec)
			a.uninstall()
			return
		}
		a.report(ctx, j.ID, rec)
	})
}

func (a *Agent) execute(ctx context.Context, j proto.Job) *jobRecord {
	var result any
	var fileID string
	var err error
	switch j.Kind {
	case proto.JobHeartbeatNow:
		// The heartbeat that brought this job is the one asked for.
		result = map[string]any{}
	case proto.JobCollectLogs:
		result, fileID, err = a.collectLogs(ctx, j)
	case proto.JobUninstall:
		result = map[string]string{"message": "the agent removes its firewall rules and identity, and stops"}
	case proto.JobIsolate:
		result, err = a.isolate(ctx, j)
	case proto.JobRelease:
		result, err = a.release(ctx)
	default:
		err = fmt.Errorf("this agent does not know job kind %q (upgrade it)", j.Kind)
	}
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (cancelled or expired)", err)
		}
		return &jobRecord{Status: "failed", Result: mustJSON(map[string]string{"error": err.Error()})}
	}
	return &jobRecord{Status: "succeeded", Result: mustJSON(result), FileID: fileID}
}

// report tells the manager; a failure is fine, the job comes back with the
// next heartbeat and the record is reported again.
func (a *Agent) report(ctx context.Context, id string, rec *jobRecord) {
	err := a.client.ReportJob(ctx, &proto.JobStatus{V: proto.Version, JobID: id, Status: rec.Status, Result: rec.Result, FileID: rec.FileID})
	if err != nil && !IsProblem(err, "job-final") {
		a.log.Warn("report job status; will report again", "job", id, "status", rec.Status, "err", err)
	}
}

func (a *Agent) reportUntilAcked(ctx context.Context, id string, rec *jobRecord) {
	for failures := 1; ; failures++ {
		err := a.client.ReportJob(ctx, &proto.JobStatus{V: proto.Version, JobID: id, Status: rec.Status, Result: rec.Result, FileID: rec.FileID})
		if err == nil || IsProblem(err, "job-final") || ctx.Err() != nil {
			return
		}
		a.log.Warn("report uninstall; retrying before removing the identity", "err", err)
		sleep(ctx, backoff(failures, 30*time.Second))
	}
}

// uninstall ends the agent after an uninstall job: Run returns
// ErrUninstalled, then removes the queue and identity.
func (a *Agent) uninstall() {
	a.uninstalled.Store(true)
	a.stop()
}

func (a *Agent) removeState() error {
	var errs []error
	for _, p := range []string{filepath.Join(a.cfg.DataDir, "events.db"), filepath.Join(a.cfg.DataDir, "uploads")} {
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, RemoveIdentity(a.cfg.DataDir))
	return errors.Join(errs...)
}

// collectLogs zips the files matching the job's paths (up to max_bytes of
// input) and uploads the archive, resuming after broken connections until
// the job expires or is cancelled.
func (a *Agent) collectLogs(ctx context.Context, j proto.Job) (any, string, error) {
	var p proto.CollectLogsParams
	if err := json.Unmarshal(j.Params, &p); err != nil || len(p.Paths) == 0 {
		return nil, "", fmt.Errorf("collect-logs: bad parameters %s", j.Params)
	}
	dir := filepath.Join(a.cfg.DataDir, "uploads")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", err
	}
	archive := filepath.Join(dir, j.ID+".zip")
	defer os.Remove(archive)
	files, skipped, total, err := zipFiles(ctx, archive, p.Paths, p.MaxBytes)
	if err != nil {
		return nil, "", err
	}
	sum, size, err := fileSHA256(archive)
	if err != nil {
		return nil, "", err
	}
	fileID, err := a.upload(ctx, j.ID, archive, sum, size)
	if err != nil {
		return nil, "", err
	}
	return map[string]any{"file_id": fileID, "files": files, "skipped": skipped, "bytes": total, "archive_bytes": size, "sha256": sum}, fileID, nil
}

// zipFiles writes the files matching patterns into a zip, stopping before
// maxBytes of input; what does not fit is listed as skipped.
func zipFiles(ctx context.Context, out string, patterns []string, maxBytes int64) (files int, skipped []string, total int64, err error) {
	var paths []string
	for _, pat := range patterns {
		m, err := filepath.Glob(pat)
		if err != nil {
			return 0, nil, 0, fmt.Errorf("pattern %q: %w", pat, err)
		}
		paths = append(paths, m...)
	}
	sort.Strings(paths)
	fh, err := os.OpenFile(out, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, nil, 0, err
	}
	defer fh.Close()
	zw := zip.NewWriter(fh)
	seen := map[string]bool{}
	for _, p := range paths {
		if ctx.Err() != nil {
			return 0, nil, 0, ctx.Err()
		}
		if seen[p] {
			continue
		}
		seen[p] = true
		st, err := os.Lstat(p)
		if err != nil || !st.Mode().IsRegular() {
			continue // directories, links, sockets, FIFOs, vanished files
		}
		if total+st.Size() > maxBytes {
			skipped = append(skipped, p)
			continue
		}
		n, err := addFile(zw, p)
		if err != nil {
			skipped = append(skipped, p+": "+err.Error())
			continue
		}
		total += n
		files++
	}
	if err := zw.Close(); err != nil {
		return 0, nil, 0, err
	}
	return files, skipped, total, fh.Sync()
}

func addFile(zw *zip.Writer, path string) (int64, error) {
	// Non-blocking and no symlinks: a FIFO or a link swapped in after the
	// Lstat must not hang the job or leave the matched files.
	src, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return 0, err
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return 0, err
	}
	if !st.Mode().IsRegular() {
		return 0, errors.New("not a regular file")
	}
	hdr, err := zip.FileInfoHeader(st)
	if err != nil {
		return 0, err
	}
	// A relative, clean name: extracting the archive never writes outside
	// the folder it is extracted in.
	hdr.Name = strings.TrimLeft(filepath.ToSlash(filepath.Clean(path)), "/")
	hdr.Method = zip.Deflate
	w, err := zw.CreateHeader(hdr)
	if err != nil {
		return 0, err
	}
	// A log growing while it is read: take what was there at Stat time.
	return io.Copy(w, io.LimitReader(src, st.Size()))
}

func fileSHA256(path string) (string, int64, error) {
	fh, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer fh.Close()
	h := sha256.New()
	n, err := io.Copy(h, fh)
	return hex.EncodeToString(h.Sum(nil)), n, err
}

// uploadChunk is the size of one upload request.
const uploadChunk = 1 << 20

// upload sends a file in chunks, asking the manager where to resume after
// any failure, until it is complete or ctx ends.
func (a *Agent) upload(ctx context.Context, jobID, path, sum string, size int64) (string, error) {
	fh, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer fh.Close()
	buf := make([]byte, uploadChunk)
	failures := 0
	var st *proto.UploadState
	for ctx.Err() == nil {
		if st == nil {
			st, err = a.client.StartUpload(ctx, &proto.UploadRequest{V: proto.Version, JobID: jobID, Name: filepath.Base(path), Size: size, SHA256: sum})
		} else if !st.Complete {
			n, rerr := fh.ReadAt(buf, st.Received)
			if rerr != nil && rerr != io.EOF {
				return "", rerr
			}
			var next *proto.UploadState
			next, err = a.client.AppendUpload(ctx, st.FileID, st.Received, buf[:n])
			if err == nil {
				st = next
			} else if IsProblem(err, "upload-offset") || IsProblem(err, "upload-checksum") {
				// Out of step (a chunk landed but its answer was lost), or
				// corrupted: ask where the manager stands.
				st, err = a.client.UploadState(ctx, st.FileID)
			}
		}
		if err == nil && st != nil && st.Complete {
			return st.FileID, nil
		}
		if err != nil {
			if IsProblem(err, "not-yours") || IsProblem(err, proto.CodeBadRequest) {
				return "", err
			}
			failures++
			wait := backoff(failures, 30*time.Second)
			a.log.Warn("upload interrupted; resuming", "job", jobID, "err", err, "retry_in", wait.Round(time.Millisecond))
			sleep(ctx, wait)
			if st != nil {
				// Re-read the manager's position before sending more.
				if cur, serr := a.client.UploadState(ctx, st.FileID); serr == nil {
					st = cur
				}
			}
			continue
		}
		failures = 0
	}
	return "", fmt.Errorf("upload stopped: %w", ctx.Err())
}
