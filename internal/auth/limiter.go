package auth

import (
	"sync"
	"time"
)

// Limiter slows password guessing. Every attempt is counted before the
// password is checked (so parallel guesses cannot slip between the check
// and the count); a success gives the attempt back. Past a key's limit
// within Window, attempts on that key are refused until Lockout passes.
//
// Keys carry their own limits: a user from one address is locked quickly,
// an address more slowly, and a user from anywhere only after many
// failures, so that strangers cannot keep a well-known account (admin)
// locked out by guessing from elsewhere.
type Limiter struct {
	Window  time.Duration
	Lockout time.Duration

	mu   sync.Mutex
	seen map[string]*failures
}

// Key is one thing attempts are counted against.
type Key struct {
	Name string
	Max  int
}

type failures struct {
	count       int
	first       time.Time
	lockedUntil time.Time
}

// maxKeys bounds the limiter's memory against address rotation.
const maxKeys = 200_000

// NewLimiter returns a limiter with production defaults.
func NewLimiter() *Limiter {
	return &Limiter{Window: 15 * time.Minute, Lockout: 15 * time.Minute, seen: map[string]*failures{}}
}

// Attempt counts an attempt against every key and reports whether it may
// go ahead; if not, until when the lock lasts.
func (l *Limiter) Attempt(now time.Time, keys ...Key) (bool, time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var until time.Time
	for _, k := range keys {
		if f, ok := l.seen[k.Name]; ok && now.Before(f.lockedUntil) && f.lockedUntil.After(until) {
			until = f.lockedUntil
		}
	}
	if !until.IsZero() {
		return false, until
	}
	if len(l.seen) > maxKeys {
		l.prune(now)
		if len(l.seen) > maxKeys {
			// Under a flood of distinct keys: start afresh rather than grow
			// without bound.
			l.seen = map[string]*failures{}
		}
	}
	for _, k := range keys {
		f, ok := l.seen[k.Name]
		if !ok || now.Sub(f.first) > l.Window {
			f = &failures{first: now}
			l.seen[k.Name] = f
		}
		f.count++
		if f.count >= k.Max {
			f.lockedUntil = now.Add(l.Lockout)
		}
	}
	return true, time.Time{}
}

// Succeeded gives a successful attempt back to every key.
func (l *Limiter) Succeeded(keys ...Key) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range keys {
		if f, ok := l.seen[k.Name]; ok {
			if f.count--; f.count <= 0 {
				delete(l.seen, k.Name)
			}
		}
	}
}

func (l *Limiter) prune(now time.Time) {
	for k, f := range l.seen {
		if now.Sub(f.first) > l.Window && now.After(f.lockedUntil) {
			delete(l.seen, k)
		}
	}
}
