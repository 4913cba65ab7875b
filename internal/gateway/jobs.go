package gateway

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/yagura/yagura/internal/jobs"
	"github.com/yagura/yagura/internal/proto"
	"github.com/yagura/yagura/internal/store"
	"github.com/yagura/yagura/internal/telemetry"
)

// Problem codes of the job endpoints.
const (
	codeJobUnknown     = "job-unknown"
	codeJobFinal       = "job-final"
	codeUploadOffset   = "upload-offset"
	codeUploadChecksum = "upload-checksum"
	codeNotYours       = "not-yours"
)

// maxWait bounds a long poll: below the idle timeouts of common proxies.
const maxWait = 55 * time.Second

// wait is the long poll: it answers when the agent should heartbeat now (a
// job for it) or when the time it asked for is up.
func (g *Gateway) wait(w http.ResponseWriter, r *http.Request) {
	id, _, ok := g.agent(w, r)
	if !ok || !g.active(r.Context(), w, id) {
		return
	}
	var req proto.WaitRequest
	if err := proto.Decode(r.Body, &req); err != nil {
		g.problem(w, http.StatusBadRequest, proto.CodeBadRequest, "wait: "+err.Error())
		return
	}
	d := min(max(proto.FromMillis(req.MaxMillis), time.Second), maxWait)
	// The server's write timeout is meant for ordinary requests.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(d + 10*time.Second))
	woken := g.jobs.Wait(r.Context(), id, d)
	reply(w, proto.WaitResponse{V: proto.Version, Wake: woken})
}

func (g *Gateway) jobStatus(w http.ResponseWriter, r *http.Request) {
	id, _, ok := g.agent(w, r)
	if !ok || !g.active(r.Context(), w, id) {
		return
	}
	var st proto.JobStatus
	if err := proto.Decode(r.Body, &st); err != nil {
		g.problem(w, http.StatusBadRequest, proto.CodeBadRequest, "job status: "+err.Error())
		return
	}
	if err := st.Validate(); err != nil {
		g.problem(w, http.StatusBadRequest, proto.CodeBadRequest, "job status: "+err.Error())
		return
	}
	tg, err := g.jobs.Report(r.Context(), id, &st, g.now())
	if err != nil {
		g.jobProblem(w, "job status", err)
		return
	}
	if g.sink != nil && store.JobFinal(tg.Status) {
		// A system event per finished job, searchable with the rest. Its
		// ID is the job's, so a repeated report is stored once; if it
		// cannot be stored the agent is told to report again (a repeated
		// final report changes nothing else).
		data, _ := json.Marshal(map[string]string{"job_id": st.JobID, "status": tg.Status, "file_id": tg.FileID})
		sev := "info"
		if tg.Status != store.JobSucceeded {
			sev = "warning"
		}
		ev := telemetry.Event{ComputerID: id, ID: "job:" + st.JobID, Type: "job-" + tg.Status, Severity: sev,
			Time: tg.FinishedAt.UTC(), ReceivedAt: g.now().UTC(), Data: string(data)}
		if ev.Time.IsZero() {
			ev.Time = ev.ReceivedAt
		}
		if err := g.sink.Write(r.Context(), []telemetry.Event{ev}); err != nil {
			if errors.Is(err, telemetry.ErrStopped) {
				g.problem(w, http.StatusServiceUnavailable, proto.CodeUnavailable, "manager is stopping; report the job again")
				return
			}
			g.internal(w, "record job event", err)
			return
		}
	}
	reply(w, struct {
		V int `json:"v"`
	}{proto.Version})
}

func (g *Gateway) jobProblem(w http.ResponseWriter, what string, err error) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		g.problem(w, http.StatusNotFound, codeJobUnknown, what+": no such job or file for this agent")
	case errors.Is(err, store.ErrConflict):
		g.problem(w, http.StatusConflict, codeJobFinal, what+": "+err.Error())
	case errors.Is(err, jobs.ErrOffset):
		g.problem(w, http.StatusConflict, codeUploadOffset, what+": "+err.Error())
	case errors.Is(err, jobs.ErrChecksum):
		g.problem(w, http.StatusUnprocessableEntity, codeUploadChecksum, what+": "+err.Error())
	case errors.Is(err, jobs.ErrNotYours):
		g.problem(w, http.StatusForbidden, codeNotYours, what+": "+err.Error())
	case errors.Is(err, jobs.ErrInvalid):
		g.problem(w, http.StatusBadRequest, proto.CodeBadRequest, what+": "+err.Error())
	case errors.Is(err, io.ErrUnexpectedEOF):
		// The agent's connection broke mid-chunk: routine, it resumes
		// from where the manager stands.
		g.problem(w, http.StatusConflict, codeUploadOffset, what+": the chunk was cut short; resume from the offset the manager holds")
	default:
		g.internal(w, what, err)
	}
}

func (g *Gateway) startUpload(w http.ResponseWriter, r *http.Request) {
	id, _, ok := g.agent(w, r)
	if !ok || !g.active(r.Context(), w, id) {
		return
	}
	var req proto.UploadRequest
	if err := proto.Decode(r.Body, &req); err != nil {
		g.problem(w, http.StatusBadRequest, proto.CodeBadRequest, "upload: "+err.Error())
		return
	}
	st, err := g.jobs.StartUpload(r.Context(), id, &req, g.now())
	if err != nil {
		g.jobProblem(w, "upload", err)
		return
	}
	reply(w, st)
}

func (g *Gateway) uploadState(w http.ResponseWriter, r *http.Request) {
	id, _, ok := g.agent(w, r)
	if !ok || !g.active(r.Context(), w, id) {
		return
	}
	st, err := g.jobs.UploadState(r.Context(), id, r.PathValue("id"))
	if err != nil {
		g.jobProblem(w, "upload", err)
		return
	}
	reply(w, st)
}

func (g *Gateway) appendUpload(w http.ResponseWriter, r *http.Request) {
	id, _, ok := g.agent(w, r)
	if !ok || !g.active(r.Context(), w, id) {
		return
	}
	// A chunk on a slow link may take longer than the server's read
	// timeout for ordinary requests.
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(10 * time.Minute))
	offset, err := strconv.ParseInt(r.URL.Query().Get("offset"), 10, 64)
	if err != nil || offset < 0 {
		g.problem(w, http.StatusBadRequest, proto.CodeBadRequest, "upload: ?offset= must be a byte offset")
		return
	}
	st, err := g.jobs.Append(r.Context(), id, r.PathValue("id"), offset, r.Body, g.now())
	if err != nil {
		g.jobProblem(w, "upload", err)
		return
	}
	reply(w, st)
}
