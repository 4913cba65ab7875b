package auth

import (
	"sync"
	"time"
)

// Limiter slows password guessing: after MaxFailures failed logins within
// Window for the same user, or from the same address, further attempts are
// refused until the lockout expires. A success clears the user's count.
type Limiter struct {
	MaxFailures int
	Window      time.Duration
	Lockout     time.Duration

	mu   sync.Mutex
	seen map[string]*failures
}

type failures struct {
	count       int
	first       time.Time
	lockedUntil time.Time
}

// NewLimiter returns a limiter with production defaults: 5 failures in 15
// minutes lock for 15 minutes.
func NewLimiter() *Limiter {
	return &Limiter{MaxFailures: 5, Window: 15 * time.Minute, Lockout: 15 * time.Minute, seen: map[string]*failures{}}
}

// Locked reports until when any of the keys (a user, an address) is
// locked; zero if none is.
func (l *Limiter) Locked(now time.Time, keys ...string) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	var until time.Time
	for _, k := range keys {
		if f, ok := l.seen[k]; ok && now.Before(f.lockedUntil) && f.lockedUntil.After(until) {
			until = f.lockedUntil
		}
	}
	return until
}

// Fail records a failed attempt for each key.
func (l *Limiter) Fail(now time.Time, keys ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.seen) > 100_000 {
		l.prune(now)
	}
	for _, k := range keys {
		f, ok := l.seen[k]
		if !ok || now.Sub(f.first) > l.Window {
			f = &failures{first: now}
			l.seen[k] = f
		}
		f.count++
		if f.count >= l.MaxFailures {
			f.lockedUntil = now.Add(l.Lockout)
		}
	}
}

// Succeed clears a key's failures (the user's, not the address's: one
// user's success says nothing about others guessed from that address).
func (l *Limiter) Succeed(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.seen, key)
}

func (l *Limiter) prune(now time.Time) {
	for k, f := range l.seen {
		if now.Sub(f.first) > l.Window && now.After(f.lockedUntil) {
			delete(l.seen, k)
		}
	}
}
