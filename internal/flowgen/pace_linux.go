package flowgen

import (
	"context"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// pacer waits for send times with tens of microseconds of precision
// without spinning a core: time.Sleep overshoots by about a millisecond
// here (the runtime's timers ride on epoll's millisecond timeout), so it
// sleeps with nanosleep on a thread of its own whose timer slack is 1 ns
// instead of the default 50 µs, and spins only for the last few
// microseconds.
type pacer struct{}

// newPacer locks the calling goroutine to its thread and lowers the
// thread's timer slack. The goroutine must call close when done.
func newPacer() pacer {
	runtime.LockOSThread()
	// Best effort: without it sleeps overshoot by ~50 µs more.
	_ = unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0)
	return pacer{}
}

// close leaves the thread locked on purpose: when the goroutine exits the
// runtime then ends the thread, so its altered timer slack never reaches
// other goroutines.
func (pacer) close() {}

const (
	spinBelow = 30 * time.Microsecond // nanosleep's wake-up latency, measured
	maxSleep  = 5 * time.Millisecond  // so cancellation is noticed promptly
)

func (pacer) waitUntil(ctx context.Context, t time.Time) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		d := time.Until(t)
		switch {
		case d <= 0:
			return nil
		case d > spinBelow:
			ts := unix.NsecToTimespec(int64(min(d-spinBelow/2, maxSleep)))
			_ = unix.Nanosleep(&ts, nil) // EINTR: loop and re-measure
		default:
			runtime.Gosched()
		}
	}
}
