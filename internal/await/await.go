// Package await provides the one way Yagura's tests wait for something that
// happens in another goroutine or process: poll a condition until it holds
// or a deadline passes, then fail with what was seen last. Only tests import
// it.
package await

import (
	"testing"
	"time"
)

// Cond polls cond every 50 ms until it returns nil, failing t with the last
// error if within passes first.
func Cond(t testing.TB, within time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, within, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
