package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/yagura/yagura/internal/jobs"
	"github.com/yagura/yagura/internal/store"
)

// Job is a job as the API shows it.
type Job struct {
	ID          string          `json:"id"`
	Kind        string          `json:"kind" enum:"heartbeat-now,collect-logs,uninstall,isolate,release"`
	Params      json.RawMessage `json:"params,omitempty"`
	Description string          `json:"description,omitempty"`
	CreatedBy   string          `json:"created_by"`
	CreatedAt   time.Time       `json:"created_at"`
	ExpiresAt   time.Time       `json:"expires_at"`
	CancelledAt *time.Time      `json:"cancelled_at,omitempty"`
	// Counts by target status.
	Counts  map[string]int `json:"counts"`
	Total   int            `json:"total"`
	Targets []JobTarget    `json:"targets,omitempty"`
}

// JobTarget is a job's progress on one computer.
type JobTarget struct {
	ComputerID  string          `json:"computer_id"`
	Status      string          `json:"status" enum:"pending,delivered,running,succeeded,failed,expired,cancelled"`
	UpdatedAt   time.Time       `json:"updated_at"`
	DeliveredAt *time.Time      `json:"delivered_at,omitempty"`
	StartedAt   *time.Time      `json:"started_at,omitempty"`
	FinishedAt  *time.Time      `json:"finished_at,omitempty"`
	Result      json.RawMessage `json:"result,omitempty"`
	FileID      string          `json:"file_id,omitempty" doc:"Download with GET /api/v1/files/{id}."`
}

func jobOut(j store.Job, ts []store.JobTarget, withTargets bool) Job {
	out := Job{
		ID: j.ID, Kind: j.Kind, Description: j.Description, CreatedBy: j.CreatedBy,
		CreatedAt: j.CreatedAt.UTC(), ExpiresAt: j.ExpiresAt.UTC(), CancelledAt: ptime(j.CancelledAt),
		Counts: map[string]int{}, Total: len(ts),
	}
	if j.Params != "" {
		out.Params = json.RawMessage(j.Params)
	}
	for _, t := range ts {
		out.Counts[t.Status]++
		if withTargets {
			jt := JobTarget{
				ComputerID: t.ComputerID, Status: t.Status, UpdatedAt: t.UpdatedAt.UTC(),
				DeliveredAt: ptime(t.DeliveredAt), StartedAt: ptime(t.StartedAt), FinishedAt: ptime(t.FinishedAt), FileID: t.FileID,
			}
			if t.Result != "" {
				jt.Result = json.RawMessage(t.Result)
			}
			out.Targets = append(out.Targets, jt)
		}
	}
	return out
}

// JobCreate is the body of a job creation.
type JobCreate struct {
	Kind        string          `json:"kind" enum:"heartbeat-now,collect-logs,uninstall,isolate,release"`
	Computers   []string        `json:"computers,omitempty" maxItems:"100000" doc:"Target computer IDs; or set all."`
	All         bool            `json:"all,omitempty" doc:"Target every active computer."`
	Params      json.RawMessage `json:"params,omitempty" doc:"collect-logs: {\"paths\": [\"/var/log/syslog\", \"/var/log/*.log\"], \"max_bytes\": 50000000}"`
	ExpiresIn   string          `json:"expires_in,omitempty" doc:"How long the job waits for computers that are away (default 24h)." example:"24h"`
	Description string          `json:"description,omitempty" maxLength:"200"`
}

type jobPath struct {
	ID string `path:"id" maxLength:"64" doc:"Job ID."`
}

func (a *API) jobErr(what string, err error) error {
	switch {
	case errors.Is(err, jobs.ErrInvalid), errors.Is(err, jobs.ErrNoMatch):
		return huma.Error422UnprocessableEntity(err.Error())
	}
	return a.storeErr(what, err)
}

func (a *API) registerJobs() {
	register(a, PermJobsWrite, huma.Operation{
		OperationID: "create-job", Method: http.MethodPost, Path: "/api/v1/jobs",
		Summary: "Create a job", Tags: []string{"Jobs"}, DefaultStatus: http.StatusCreated,
		Description: "Online agents get it within seconds (long poll); others with their next heartbeat, until it expires.",
	}, func(ctx context.Context, in *struct{ Body JobCreate }) (*struct{ Body Job }, error) {
		var exp time.Duration
		if in.Body.ExpiresIn != "" {
			d, err := time.ParseDuration(in.Body.ExpiresIn)
			if err != nil || d < time.Minute {
				return nil, huma.Error422UnprocessableEntity("invalid job", &huma.ErrorDetail{
					Location: "body.expires_in", Value: in.Body.ExpiresIn, Message: `want a duration of at least 1m, such as "2h"`,
				})
			}
			exp = d
		}
		now := a.d.Now()
		j, targets, err := a.d.Jobs.Create(ctx, jobs.CreateRequest{
			Kind: in.Body.Kind, Params: in.Body.Params, Computers: in.Body.Computers, All: in.Body.All,
			ExpiresIn: exp, Description: in.Body.Description, By: Principal(ctx),
		}, now)
		if err != nil {
			return nil, a.jobErr("job", err)
		}
		a.d.Log.Info("job created", "job", j.ID, "kind", j.Kind, "targets", len(targets), "by", Principal(ctx))
		note(ctx, j.ID, map[string]any{"kind": j.Kind, "targets": len(targets), "all": in.Body.All})
		ts, err := a.d.Store.JobTargets(ctx, j.ID)
		if err != nil {
			return nil, a.storeErr("job "+j.ID, err)
		}
		return &struct{ Body Job }{Body: jobOut(j, ts, true)}, nil
	})
	register(a, PermJobsRead, huma.Operation{
		OperationID: "list-jobs", Method: http.MethodGet, Path: "/api/v1/jobs",
		Summary: "List jobs", Tags: []string{"Jobs"}, Description: "Newest first, with counts by target status.",
	}, func(ctx context.Context, in *struct {
		Limit int `query:"limit" minimum:"1" maximum:"1000" default:"100"`
	}) (*struct {
		Body struct {
			Items []Job `json:"items"`
		}
	}, error) {
		js, err := a.d.Store.ListJobs(ctx, in.Limit)
		if err != nil {
			return nil, a.storeErr("jobs", err)
		}
		out := &struct {
			Body struct {
				Items []Job `json:"items"`
			}
		}{}
		out.Body.Items = make([]Job, 0, len(js))
		for _, j := range js {
			ts, err := a.d.Store.JobTargets(ctx, j.ID)
			if err != nil {
				return nil, a.storeErr("job "+j.ID, err)
			}
			out.Body.Items = append(out.Body.Items, jobOut(j, ts, false))
		}
		return out, nil
	})
	register(a, PermJobsRead, huma.Operation{
		OperationID: "get-job", Method: http.MethodGet, Path: "/api/v1/jobs/{id}",
		Summary: "Show a job with its targets", Tags: []string{"Jobs"},
	}, func(ctx context.Context, in *jobPath) (*struct{ Body Job }, error) {
		j, err := a.d.Store.GetJob(ctx, in.ID)
		if err != nil {
			return nil, a.storeErr("job "+in.ID, err)
		}
		ts, err := a.d.Store.JobTargets(ctx, j.ID)
		if err != nil {
			return nil, a.storeErr("job "+j.ID, err)
		}
		return &struct{ Body Job }{Body: jobOut(j, ts, true)}, nil
	})
	register(a, PermJobsWrite, huma.Operation{
		OperationID: "cancel-job", Method: http.MethodPost, Path: "/api/v1/jobs/{id}/cancel",
		Summary: "Cancel a job", Tags: []string{"Jobs"},
		Description: "Targets that have not started it will not run it; those running it are told to stop.",
	}, func(ctx context.Context, in *jobPath) (*struct{ Body Job }, error) {
		j, err := a.d.Jobs.Cancel(ctx, in.ID, a.d.Now())
		if err != nil {
			return nil, a.changeErr("job "+in.ID, "cancelled", err)
		}
		a.d.Log.Info("job cancelled", "job", j.ID, "by", Principal(ctx))
		ts, err := a.d.Store.JobTargets(ctx, j.ID)
		if err != nil {
			return nil, a.storeErr("job "+j.ID, err)
		}
		return &struct{ Body Job }{Body: jobOut(j, ts, true)}, nil
	})
	register(a, PermFilesRead, huma.Operation{
		OperationID: "download-file", Method: http.MethodGet, Path: "/api/v1/files/{id}",
		Summary: "Download an uploaded file", Tags: []string{"Jobs"},
		Description: "A file an agent uploaded for a job (collect-logs). The X-Checksum-SHA256 header carries its hash.",
		Responses:   map[string]*huma.Response{"200": {Description: "The file.", Content: map[string]*huma.MediaType{"application/octet-stream": {}}}},
	}, func(ctx context.Context, in *struct {
		ID string `path:"id" maxLength:"64"`
	}) (*huma.StreamResponse, error) {
		f, fh, err := a.d.Jobs.OpenFile(ctx, in.ID)
		if err != nil {
			if errors.Is(err, store.ErrConflict) {
				return nil, huma.Error409Conflict(err.Error())
			}
			return nil, a.storeErr("file "+in.ID, err)
		}
		return &huma.StreamResponse{Body: func(hctx huma.Context) {
			defer fh.Close()
			hctx.SetHeader("Content-Type", "application/octet-stream")
			hctx.SetHeader("Content-Length", fmt.Sprint(f.Size))
			hctx.SetHeader("Content-Disposition", fmt.Sprintf("attachment; filename=%q", f.Name))
			hctx.SetHeader("X-Checksum-SHA256", f.SHA256)
			if _, err := io.Copy(hctx.BodyWriter(), fh); err != nil {
				a.d.Log.Warn("file download interrupted", "file", f.ID, "err", err)
			}
		}}, nil
	})
}
