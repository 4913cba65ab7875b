package server

import (
	"crypto/rand"
	"crypto/tls"
	"errors"
	"sync"
	"time"
)

// sessionStore keeps TLS sessions on the manager and hands agents a 16-byte
// handle as their ticket. Go's own tickets carry the client's certificate
// chain, about 1.5 KB sent twice on every resumed connection; with a
// handle, reconnecting costs a fraction of that (docs/benchmarks.md).
// Sessions are per manager node: on another node the agent simply does a
// full handshake.
type sessionStore struct {
	mu      sync.Mutex
	max     int
	ttl     time.Duration
	entries map[string]sessionEntry
	order   []string // handles, oldest first: eviction is FIFO and O(1)
}

type sessionEntry struct {
	state   []byte
	expires time.Time
}

func newSessionStore(max int, ttl time.Duration) *sessionStore {
	return &sessionStore{max: max, ttl: ttl, entries: map[string]sessionEntry{}}
}

// wrap implements tls.Config.WrapSession.
func (s *sessionStore) wrap(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return nil, err
	}
	if len(cs.VerifiedChains) == 0 {
		// Only agents (verified client certificates) get a stored session,
		// so anonymous clients cannot fill the store. Others get a handle
		// that resolves to nothing (an empty ticket would break clients):
		// their next connection is a full handshake.
		return id, nil
	}
	b, err := ss.Bytes()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	// Drop the oldest sessions (used or not) to stay under the cap: a
	// dropped session only costs that agent one full handshake.
	for len(s.order) > 0 && (len(s.entries) >= s.max || len(s.order) > 2*s.max) {
		delete(s.entries, s.order[0])
		s.order = s.order[1:]
	}
	s.entries[string(id)] = sessionEntry{state: b, expires: now.Add(s.ttl)}
	s.order = append(s.order, string(id))
	return id, nil
}

// unwrap implements tls.Config.UnwrapSession. An unknown or expired handle
// is not an error: the handshake falls back to a full one.
func (s *sessionStore) unwrap(identity []byte, _ tls.ConnectionState) (*tls.SessionState, error) {
	s.mu.Lock()
	e, ok := s.entries[string(identity)]
	if ok {
		// Single use: TLS 1.3 hands out a new ticket on every resumption.
		delete(s.entries, string(identity))
	}
	s.mu.Unlock()
	if ok && time.Now().After(e.expires) {
		ok = false
	}
	if !ok {
		return nil, nil
	}
	ss, err := tls.ParseSessionState(e.state)
	if err != nil {
		return nil, errors.Join(errors.New("stored TLS session"), err)
	}
	return ss, nil
}
