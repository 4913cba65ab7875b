package jobs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/yagura/yagura/internal/proto"
	"github.com/yagura/yagura/internal/store"
)

// MaxChunk bounds one upload request.
const MaxChunk = 4 << 20

// Upload errors.
var (
	ErrOffset   = errors.New("upload offset does not match what the manager holds")
	ErrChecksum = errors.New("uploaded file does not match its SHA-256")
	ErrNotYours = errors.New("not this agent's job or file")
)

// fileID is the same for every attempt of one job on one computer, so an
// agent that lost its connection (or restarted) resumes the same upload.
func fileID(jobID, computerID string) string {
	sum := sha256.Sum256([]byte(jobID + "\x00" + computerID))
	return hex.EncodeToString(sum[:16])
}

func (s *Service) filesDir() string { return s.cfg.FilesDir }

func (s *Service) path(id string) string { return filepath.Join(s.filesDir(), id) }

// StartUpload announces an upload, or finds the one already started.
func (s *Service) StartUpload(ctx context.Context, agentID string, r *proto.UploadRequest, now time.Time) (proto.UploadState, error) {
	if r.Size < 0 || r.Size > s.cfg.MaxUploadBytes {
		return proto.UploadState{}, fmt.Errorf("%w: size %d (at most %d)", ErrInvalid, r.Size, s.cfg.MaxUploadBytes)
	}
	if _, err := hex.DecodeString(r.SHA256); err != nil || len(r.SHA256) != 64 {
		return proto.UploadState{}, fmt.Errorf("%w: sha256 must be 64 hex digits", ErrInvalid)
	}
	if err := s.ownTarget(ctx, r.JobID, agentID); err != nil {
		return proto.UploadState{}, err
	}
	id := fileID(r.JobID, agentID)
	f, err := s.st.GetFile(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		f = store.File{ID: id, JobID: r.JobID, ComputerID: agentID, Name: filepath.Base(r.Name), Size: r.Size, SHA256: r.SHA256, CreatedAt: now}
		if err := os.MkdirAll(s.filesDir(), 0o700); err != nil {
			return proto.UploadState{}, err
		}
		if err := s.st.CreateFile(ctx, f); err != nil && !errors.Is(err, store.ErrConflict) {
			return proto.UploadState{}, err
		}
	case err != nil:
		return proto.UploadState{}, err
	case f.SHA256 != r.SHA256 || f.Size != r.Size:
		// A different file for the same job (the agent built its archive
		// again): start over with this one.
		os.Remove(s.path(f.ID) + ".part")
		f.SHA256, f.Size, f.Received, f.Name = r.SHA256, r.Size, 0, filepath.Base(r.Name)
		if err := s.st.ReplaceFile(ctx, f); err != nil {
			return proto.UploadState{}, err
		}
	}
	return state(f), nil
}

func state(f store.File) proto.UploadState {
	return proto.UploadState{V: proto.Version, FileID: f.ID, Received: f.Received, Complete: !f.CompleteAt.IsZero()}
}

func (s *Service) ownTarget(ctx context.Context, jobID, agentID string) error {
	j, err := s.st.GetJob(ctx, jobID)
	if err != nil {
		return err
	}
	if j.Kind != proto.JobCollectLogs {
		return fmt.Errorf("%w: job %s (%s) takes no upload", ErrNotYours, jobID, j.Kind)
	}
	ts, err := s.st.JobTargets(ctx, jobID)
	if err != nil {
		return err
	}
	for _, t := range ts {
		if t.ComputerID == agentID {
			if store.JobFinal(t.Status) {
				return fmt.Errorf("%w: job %s is already %s", ErrNotYours, jobID, t.Status)
			}
			return nil
		}
	}
	return fmt.Errorf("%w: job %s", ErrNotYours, jobID)
}

// UploadState reports how much of a file has arrived.
func (s *Service) UploadState(ctx context.Context, agentID, id string) (proto.UploadState, error) {
	f, err := s.st.GetFile(ctx, id)
	if err != nil {
		return proto.UploadState{}, err
	}
	if f.ComputerID != agentID {
		return proto.UploadState{}, ErrNotYours
	}
	return state(f), nil
}

func (s *Service) lock(id string) func() {
	m, _ := s.uploads.LoadOrStore(id, &sync.Mutex{})
	mu := m.(*sync.Mutex)
	mu.Lock()
	return mu.Unlock
}

// Append writes a chunk at offset, which must be what the manager already
// holds (so a retried chunk after a lost answer is detected, not written
// twice). The last chunk completes the file if its SHA-256 matches.
func (s *Service) Append(ctx context.Context, agentID, id string, offset int64, body io.Reader, now time.Time) (proto.UploadState, error) {
	defer s.lock(id)()
	f, err := s.st.GetFile(ctx, id)
	if err != nil {
		return proto.UploadState{}, err
	}
	if f.ComputerID != agentID {
		return proto.UploadState{}, ErrNotYours
	}
	if !f.CompleteAt.IsZero() {
		return state(f), nil
	}
	if offset != f.Received {
		return state(f), fmt.Errorf("%w: got offset %d, the manager holds %d bytes", ErrOffset, offset, f.Received)
	}
	fh, err := os.OpenFile(s.path(id)+".part", os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return proto.UploadState{}, fmt.Errorf("open upload: %w", err)
	}
	defer fh.Close()
	// Bytes written after the last recorded offset (a crash between write
	// and record) are discarded; a part file shorter than recorded (lost,
	// or on another manager node) restarts the upload where it really is.
	if st, err := fh.Stat(); err != nil {
		return proto.UploadState{}, err
	} else if st.Size() < f.Received {
		if err := s.st.SetFileReceived(ctx, id, st.Size(), time.Time{}); err != nil {
			return proto.UploadState{}, err
		}
		f.Received = st.Size()
		return state(f), fmt.Errorf("%w: the manager holds %d bytes", ErrOffset, f.Received)
	}
	if err := fh.Truncate(f.Received); err != nil {
		return proto.UploadState{}, err
	}
	if _, err := fh.Seek(f.Received, io.SeekStart); err != nil {
		return proto.UploadState{}, err
	}
	limit := min(MaxChunk, f.Size-f.Received)
	n, err := io.Copy(fh, io.LimitReader(body, limit+1))
	if err != nil {
		return proto.UploadState{}, fmt.Errorf("receive chunk: %w", err)
	}
	if n > limit {
		if limit == MaxChunk {
			return state(f), fmt.Errorf("%w: chunk larger than %d bytes", ErrInvalid, MaxChunk)
		}
		return state(f), fmt.Errorf("%w: chunk runs past the announced size %d", ErrInvalid, f.Size)
	}
	if err := fh.Sync(); err != nil {
		return proto.UploadState{}, err
	}
	f.Received += n
	if f.Received < f.Size {
		if err := s.st.SetFileReceived(ctx, id, f.Received, time.Time{}); err != nil {
			return proto.UploadState{}, err
		}
		return state(f), nil
	}
	sum, err := hashFile(s.path(id) + ".part")
	if err != nil {
		return proto.UploadState{}, err
	}
	if sum != f.SHA256 {
		os.Remove(s.path(id) + ".part")
		if err := s.st.SetFileReceived(ctx, id, 0, time.Time{}); err != nil {
			return proto.UploadState{}, err
		}
		return proto.UploadState{V: proto.Version, FileID: id}, fmt.Errorf("%w: got %s, announced %s; start again", ErrChecksum, sum, f.SHA256)
	}
	if err := os.Rename(s.path(id)+".part", s.path(id)); err != nil {
		return proto.UploadState{}, err
	}
	if err := s.st.SetFileReceived(ctx, id, f.Received, now); err != nil {
		return proto.UploadState{}, err
	}
	f.CompleteAt = now
	return state(f), nil
}

func hashFile(path string) (string, error) {
	fh, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer fh.Close()
	h := sha256.New()
	if _, err := io.Copy(h, fh); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// OpenFile opens a complete uploaded file for download.
func (s *Service) OpenFile(ctx context.Context, id string) (store.File, *os.File, error) {
	f, err := s.st.GetFile(ctx, id)
	if err != nil {
		return f, nil, err
	}
	if f.CompleteAt.IsZero() {
		return f, nil, fmt.Errorf("file %s is still uploading (%d of %d bytes): %w", id, f.Received, f.Size, store.ErrConflict)
	}
	fh, err := os.Open(s.path(id))
	if err != nil {
		return f, nil, fmt.Errorf("open stored file %s: %w", id, err)
	}
	return f, fh, nil
}
