//go:build !linux

package flowgen

import (
	"context"
	"time"
)

// pacer waits with time.Sleep: coarser than on Linux, but the average
// rate is still exact because send times are absolute.
type pacer struct{}

func newPacer() pacer { return pacer{} }

func (pacer) close() {}

func (pacer) waitUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}
