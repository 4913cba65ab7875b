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
}

type sessionEntry struct {
	state   []byte
	expires time.Time
}

func newSessionStore(max int, ttl time.Duration) *sessionStore {
	return &sessionStore{max: max, ttl: ttl, entries: map[string]sessionEntry{}}
}

// wrap implements tls.Config.WrapSession.
func (s *sessionStore) wrap(_ tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
	b, err := ss.Bytes()
	if err != nil {
		return nil, err
	}
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return nil, err
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.entries) >= s.max {
		// Drop expired sessions, then arbitrary ones (map order): a dropped
		// session only costs that agent one full handshake.
		for k, e := range s.entries {
			if len(s.entries) < s.max*9/10 {
				break
			}
			if now.After(e.expires) || len(s.entries) >= s.max {
				delete(s.entries, k)
			}
		}
	}
	s.entries[string(id)] = sessionEntry{state: b, expires: now.Add(s.ttl)}
	return id, nil
}

// unwrap implements tls.Config.UnwrapSession. An unknown or expired handle
// is not an error: the handshake falls back to a full one.
func (s *sessionStore) unwrap(identity []byte, _ tls.ConnectionState) (*tls.SessionState, error) {
	s.mu.Lock()
	e, ok := s.entries[string(identity)]
	if ok && time.Now().After(e.expires) {
		delete(s.entries, string(identity))
		ok = false
	}
	s.mu.Unlock()
	if !ok {
		return nil, nil
	}
	ss, err := tls.ParseSessionState(e.state)
	if err != nil {
		return nil, errors.Join(errors.New("stored TLS session"), err)
	}
	return ss, nil
}
