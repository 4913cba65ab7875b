package gateway

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/yagura/yagura/internal/proto"
	"github.com/yagura/yagura/internal/rollout"
)

// Policies answers agents' policy requests. Nil disables the endpoint.
type Policies interface {
	ForAgent(ctx context.Context, id, have string) (*rollout.Answer, error)
	// Changed asks for the effective policies to be recomputed soon (a
	// computer enrolled).
	Changed()
}

// codeNoPolicy: the manager has no effective policy for the agent yet.
const codeNoPolicy = "no-policy"

// gzipAbove is the body size from which policy responses are compressed:
// a policy with 10,000 list entries shrinks several times, a heartbeat-sized
// delta would only grow.
const gzipAbove = 1024

func (g *Gateway) policy(w http.ResponseWriter, r *http.Request) {
	id, _, ok := g.agent(w, r)
	if !ok || !g.active(r.Context(), w, id) {
		return
	}
	var req proto.PolicyRequest
	if err := proto.Decode(r.Body, &req); err != nil {
		g.problem(w, http.StatusBadRequest, proto.CodeBadRequest, "policy request: "+err.Error())
		return
	}
	if len(req.Have) > 64 {
		g.problem(w, http.StatusBadRequest, proto.CodeBadRequest, "policy request: have: longer than 64 bytes")
		return
	}
	ans, err := g.policies.ForAgent(r.Context(), id, req.Have)
	if errors.Is(err, rollout.ErrNoPolicy) {
		g.problem(w, http.StatusNotFound, codeNoPolicy, "the manager has no effective policy for this computer yet; it is retried at the next heartbeat")
		return
	}
	if err != nil {
		g.internal(w, "policy for agent", err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if len(ans.Body) < gzipAbove || !acceptsGzip(r) {
		_, _ = w.Write(ans.Body)
		return
	}
	w.Header().Set("Content-Encoding", "gzip")
	w.Header().Add("Vary", "Accept-Encoding")
	_, _ = w.Write(ans.Gzip())
}

func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		enc, _, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(enc, "gzip") {
			return true
		}
	}
	return false
}
