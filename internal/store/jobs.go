package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"
)

// The job queries are few and not on a hot path: they are written here
// once, with ? placeholders, and rebound per call.

const jobColumns = "id, kind, params, description, created_by, created_at, expires_at, cancelled_at"

const targetColumns = "job_id, computer_id, status, updated_at, delivered_at, started_at, finished_at, result, file_id"

func (db *DB) rb(q string) string {
	if db.d.Rebind {
		return rebindDollar(q)
	}
	return q
}

// CreateJob stores a job and a pending target for each computer, at once.
func (db *DB) CreateJob(ctx context.Context, j Job, computers []string) error {
	if j.ID == "" || j.Kind == "" || j.CreatedAt.IsZero() || j.ExpiresAt.IsZero() || len(computers) == 0 {
		return fmt.Errorf("create job %q: ID, kind, times and at least one target are required: %w", j.ID, ErrInvalid)
	}
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, db.rb("INSERT INTO jobs ("+jobColumns+") VALUES (?, ?, ?, ?, ?, ?, ?, ?)"),
			j.ID, j.Kind, j.Params, j.Description, j.CreatedBy, micros(j.CreatedAt), micros(j.ExpiresAt), micros(j.CancelledAt)); err != nil {
			return err
		}
		stmt, err := tx.PrepareContext(ctx, db.rb("INSERT INTO job_targets (job_id, computer_id, status, updated_at) VALUES (?, ?, ?, ?)"))
		if err != nil {
			return err
		}
		defer stmt.Close()
		for _, c := range computers {
			if _, err := stmt.ExecContext(ctx, j.ID, c, JobPending, micros(j.CreatedAt)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return db.fail(fmt.Sprintf("create job %q", j.ID), err)
	}
	return nil
}

func scanJob(s interface{ Scan(...any) error }) (Job, error) {
	var j Job
	var c, e, x sql.NullInt64
	if err := s.Scan(&j.ID, &j.Kind, &j.Params, &j.Description, &j.CreatedBy, &c, &e, &x); err != nil {
		return Job{}, err
	}
	j.CreatedAt, j.ExpiresAt, j.CancelledAt = fromMicros(c), fromMicros(e), fromMicros(x)
	return j, nil
}

func scanTarget(s interface{ Scan(...any) error }) (JobTarget, error) {
	var t JobTarget
	var u, d, st, f sql.NullInt64
	if err := s.Scan(&t.JobID, &t.ComputerID, &t.Status, &u, &d, &st, &f, &t.Result, &t.FileID); err != nil {
		return JobTarget{}, err
	}
	t.UpdatedAt, t.DeliveredAt, t.StartedAt, t.FinishedAt = fromMicros(u), fromMicros(d), fromMicros(st), fromMicros(f)
	return t, nil
}

// GetJob returns one job.
func (db *DB) GetJob(ctx context.Context, id string) (Job, error) {
	j, err := scanJob(db.db.QueryRowContext(ctx, db.rb("SELECT "+jobColumns+" FROM jobs WHERE id = ?"), id))
	if err != nil {
		return Job{}, db.fail(fmt.Sprintf("get job %q", id), err)
	}
	return j, nil
}

// ListJobs returns the newest jobs first.
func (db *DB) ListJobs(ctx context.Context, limit int) ([]Job, error) {
	if limit <= 0 {
		limit = 1000
	}
	rows, err := db.db.QueryContext(ctx, db.rb("SELECT "+jobColumns+" FROM jobs ORDER BY created_at DESC, id"+db.collate+" LIMIT ?"), limit)
	if err != nil {
		return nil, db.fail("list jobs", err)
	}
	defer rows.Close()
	var out []Job
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, db.fail("list jobs", err)
		}
		out = append(out, j)
	}
	if err := rows.Err(); err != nil {
		return nil, db.fail("list jobs", err)
	}
	return out, nil
}

// JobTargets returns a job's targets, by computer ID.
func (db *DB) JobTargets(ctx context.Context, jobID string) ([]JobTarget, error) {
	return db.targets(ctx, "job_id = ?", jobID)
}

// ComputerJobs returns a computer's job targets, newest job first.
func (db *DB) ComputerJobs(ctx context.Context, computerID string) ([]JobTarget, error) {
	return db.targets(ctx, "computer_id = ?", computerID)
}

func (db *DB) targets(ctx context.Context, where string, arg any) ([]JobTarget, error) {
	rows, err := db.db.QueryContext(ctx, db.rb("SELECT "+targetColumns+" FROM job_targets WHERE "+where+" ORDER BY job_id"+db.collate+", computer_id"+db.collate), arg)
	if err != nil {
		return nil, db.fail("list job targets", err)
	}
	defer rows.Close()
	var out []JobTarget
	for rows.Next() {
		t, err := scanTarget(rows)
		if err != nil {
			return nil, db.fail("list job targets", err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, db.fail("list job targets", err)
	}
	return out, nil
}

// UnfinishedJobs returns the jobs a computer still has to run or finish
// reporting: not cancelled (unless already running), not expired, target
// not final. They are sent with every heartbeat until the agent reports a
// final status; the agent remembers what it ran, so it never runs one twice.
func (db *DB) UnfinishedJobs(ctx context.Context, computerID string, now time.Time) ([]Job, error) {
	rows, err := db.db.QueryContext(ctx, db.rb(`SELECT `+prefixed("j.", jobColumns)+` FROM jobs j
		JOIN job_targets t ON t.job_id = j.id
		WHERE t.computer_id = ? AND t.status IN (?, ?, ?) AND j.expires_at > ?
		AND (j.cancelled_at IS NULL OR t.status = ?)
		ORDER BY j.created_at, j.id`+db.collate),
		computerID, JobPending, JobDelivered, JobRunning, now.UnixMicro(), JobRunning)
	if err != nil {
		return nil, db.fail("unfinished jobs", err)
	}
	defer rows.Close()
	var out []Job
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, db.fail("unfinished jobs", err)
		}
		out = append(out, j)
	}
	if err := rows.Err(); err != nil {
		return nil, db.fail("unfinished jobs", err)
	}
	return out, nil
}

func prefixed(p, cols string) string {
	parts := strings.Split(cols, ", ")
	for i := range parts {
		parts[i] = p + parts[i]
	}
	return strings.Join(parts, ", ")
}

// MarkDelivered moves the computer's pending targets of these jobs to
// delivered.
func (db *DB) MarkDelivered(ctx context.Context, computerID string, jobIDs []string, now time.Time) error {
	if len(jobIDs) == 0 {
		return nil
	}
	args := []any{JobDelivered, now.UnixMicro(), now.UnixMicro(), computerID, JobPending}
	for _, id := range jobIDs {
		args = append(args, id)
	}
	q := "UPDATE job_targets SET status = ?, updated_at = ?, delivered_at = ? WHERE computer_id = ? AND status = ? AND job_id IN (?" + strings.Repeat(", ?", len(jobIDs)-1) + ")"
	if _, err := db.db.ExecContext(ctx, db.rb(q), args...); err != nil {
		return db.fail("mark jobs delivered", err)
	}
	return nil
}

// UpdateJobTarget records what an agent reports: running, succeeded or
// failed, with a result and an uploaded file. A final status is never
// changed again (ErrConflict), so a late or repeated report cannot undo a
// cancellation, an expiry or an earlier result.
func (db *DB) UpdateJobTarget(ctx context.Context, t JobTarget, now time.Time) (JobTarget, error) {
	switch t.Status {
	case JobRunning, JobSucceeded, JobFailed:
	default:
		return JobTarget{}, fmt.Errorf("update job %q on %q: status %q: %w", t.JobID, t.ComputerID, t.Status, ErrInvalid)
	}
	var out JobTarget
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		cur, err := scanTarget(tx.QueryRowContext(ctx, db.rb("SELECT "+targetColumns+" FROM job_targets WHERE job_id = ? AND computer_id = ?"), t.JobID, t.ComputerID))
		if err != nil {
			return err
		}
		if JobFinal(cur.Status) {
			if cur.Status == t.Status && cur.Result == t.Result {
				out = cur // the same report again: nothing to do
				return nil
			}
			return fmt.Errorf("job is already %s: %w", cur.Status, ErrConflict)
		}
		started, finished := micros(cur.StartedAt), micros(cur.FinishedAt)
		if cur.StartedAt.IsZero() {
			started = now.UnixMicro()
		}
		if JobFinal(t.Status) {
			finished = now.UnixMicro()
		}
		delivered := micros(cur.DeliveredAt)
		if cur.DeliveredAt.IsZero() {
			delivered = now.UnixMicro()
		}
		if _, err := tx.ExecContext(ctx, db.rb(`UPDATE job_targets SET status = ?, updated_at = ?, delivered_at = ?, started_at = ?, finished_at = ?, result = ?, file_id = ?
			WHERE job_id = ? AND computer_id = ?`),
			t.Status, now.UnixMicro(), delivered, started, finished, t.Result, t.FileID, t.JobID, t.ComputerID); err != nil {
			return err
		}
		out, err = scanTarget(tx.QueryRowContext(ctx, db.rb("SELECT "+targetColumns+" FROM job_targets WHERE job_id = ? AND computer_id = ?"), t.JobID, t.ComputerID))
		return err
	})
	if err != nil {
		return JobTarget{}, db.fail(fmt.Sprintf("update job %q on %q", t.JobID, t.ComputerID), err)
	}
	return out, nil
}

// CancelJob cancels a job: targets not yet running become cancelled; running
// ones finish (the agent sees the cancellation and stops what it can).
func (db *DB) CancelJob(ctx context.Context, id string, now time.Time) (Job, error) {
	var j Job
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		if j, err = scanJob(tx.QueryRowContext(ctx, db.rb("SELECT "+jobColumns+" FROM jobs WHERE id = ?"), id)); err != nil {
			return err
		}
		if !j.CancelledAt.IsZero() {
			return fmt.Errorf("already cancelled: %w", ErrConflict)
		}
		j.CancelledAt = now.UTC().Truncate(time.Microsecond)
		if _, err := tx.ExecContext(ctx, db.rb("UPDATE jobs SET cancelled_at = ? WHERE id = ?"), now.UnixMicro(), id); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, db.rb("UPDATE job_targets SET status = ?, updated_at = ?, finished_at = ? WHERE job_id = ? AND status IN (?, ?)"),
			JobCancelled, now.UnixMicro(), now.UnixMicro(), id, JobPending, JobDelivered)
		return err
	})
	if err != nil {
		return Job{}, db.fail(fmt.Sprintf("cancel job %q", id), err)
	}
	return j, nil
}

// ExpireJobs marks unfinished targets of expired jobs as expired and says
// how many.
func (db *DB) ExpireJobs(ctx context.Context, now time.Time) (int, error) {
	res, err := db.db.ExecContext(ctx, db.rb(`UPDATE job_targets SET status = ?, updated_at = ?, finished_at = ?
		WHERE status IN (?, ?, ?) AND job_id IN (SELECT id FROM jobs WHERE expires_at <= ?)`),
		JobExpired, now.UnixMicro(), now.UnixMicro(), JobPending, JobDelivered, JobRunning, now.UnixMicro())
	if err != nil {
		return 0, db.fail("expire jobs", err)
	}
	n, err := res.RowsAffected()
	return int(n), err
}

const fileColumns = "id, job_id, computer_id, name, size, sha256, received, created_at, complete_at"

// CreateFile records an upload that is about to start.
func (db *DB) CreateFile(ctx context.Context, f File) error {
	if f.ID == "" || f.JobID == "" || f.ComputerID == "" || f.Size < 0 || len(f.SHA256) != 64 {
		return fmt.Errorf("create file %q: %w", f.ID, ErrInvalid)
	}
	if _, err := db.db.ExecContext(ctx, db.rb("INSERT INTO files ("+fileColumns+") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"),
		f.ID, f.JobID, f.ComputerID, f.Name, f.Size, f.SHA256, f.Received, micros(f.CreatedAt), micros(f.CompleteAt)); err != nil {
		return db.fail(fmt.Sprintf("create file %q", f.ID), err)
	}
	return nil
}

// GetFile returns a file's record.
func (db *DB) GetFile(ctx context.Context, id string) (File, error) {
	var f File
	var c, done sql.NullInt64
	err := db.db.QueryRowContext(ctx, db.rb("SELECT "+fileColumns+" FROM files WHERE id = ?"), id).
		Scan(&f.ID, &f.JobID, &f.ComputerID, &f.Name, &f.Size, &f.SHA256, &f.Received, &c, &done)
	if err != nil {
		return File{}, db.fail(fmt.Sprintf("get file %q", id), err)
	}
	f.CreatedAt, f.CompleteAt = fromMicros(c), fromMicros(done)
	return f, nil
}

// SetFileReceived records upload progress, and completion when complete is
// not zero.
func (db *DB) SetFileReceived(ctx context.Context, id string, received int64, complete time.Time) error {
	res, err := db.db.ExecContext(ctx, db.rb("UPDATE files SET received = ?, complete_at = ? WHERE id = ?"), received, micros(complete), id)
	if err != nil {
		return db.fail(fmt.Sprintf("update file %q", id), err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("update file %q: %w", id, ErrNotFound)
	}
	return nil
}

// PendingComputers lists computers that have unfinished job targets, so the
// heartbeat path can skip the job query for everyone else.
func (db *DB) PendingComputers(ctx context.Context) ([]string, error) {
	rows, err := db.db.QueryContext(ctx, db.rb("SELECT DISTINCT computer_id FROM job_targets WHERE status IN (?, ?, ?)"), JobPending, JobDelivered, JobRunning)
	if err != nil {
		return nil, db.fail("pending computers", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, db.fail("pending computers", err)
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// MarkUninstalled records that a computer's agent uninstalled itself; it is
// refused from then on, like a deactivated one.
func (db *DB) MarkUninstalled(ctx context.Context, id string, at time.Time) error {
	res, err := db.db.ExecContext(ctx, db.rb("UPDATE computers SET state = ?, deactivated_at = ? WHERE id = ?"), ComputerUninstalled, micros(at), id)
	if err != nil {
		return db.fail(fmt.Sprintf("mark computer %q uninstalled", id), err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("mark computer %q uninstalled: %w", id, ErrNotFound)
	}
	return nil
}

// SetComputerCommunication sets or (with "") removes a computer's
// communication-direction override.
func (db *DB) SetComputerCommunication(ctx context.Context, id, mode string) (Computer, error) {
	res, err := db.db.ExecContext(ctx, db.rb("UPDATE computers SET communication = ? WHERE id = ?"), mode, id)
	if err != nil {
		return Computer{}, db.fail(fmt.Sprintf("set communication of computer %q", id), err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return Computer{}, fmt.Errorf("set communication of computer %q: %w", id, ErrNotFound)
	}
	return db.GetComputer(ctx, id)
}

// ReplaceFile restarts an upload with another file (same ID).
func (db *DB) ReplaceFile(ctx context.Context, f File) error {
	res, err := db.db.ExecContext(ctx, db.rb("UPDATE files SET name = ?, size = ?, sha256 = ?, received = 0, complete_at = NULL WHERE id = ?"), f.Name, f.Size, f.SHA256, f.ID)
	if err != nil {
		return db.fail(fmt.Sprintf("replace file %q", f.ID), err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("replace file %q: %w", f.ID, ErrNotFound)
	}
	return nil
}
