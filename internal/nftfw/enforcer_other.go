//go:build !linux

package nftfw

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"

	"github.com/yagura/yagura/internal/firewall"
)

// Enforcer enforces firewall programs with nftables, which only Linux has:
// on this system New returns an error.
type Enforcer struct{}

var errNotLinux = fmt.Errorf("nftfw: nftables enforcement needs Linux, not %s: %w", runtime.GOOS, errors.ErrUnsupported)

// New returns an error: nftables is Linux only.
func New(cfg Config, log *slog.Logger) (*Enforcer, error) { return nil, errNotLinux }

// Tables returns nothing.
func (e *Enforcer) Tables() []string { return nil }

// Apply returns an error.
func (e *Enforcer) Apply(ctx context.Context, p *firewall.Program, opt firewall.Options) error {
	return errNotLinux
}

// Remove returns an error.
func (e *Enforcer) Remove(ctx context.Context) error { return errNotLinux }

// Stats returns an error.
func (e *Enforcer) Stats(ctx context.Context) (Stats, error) { return Stats{}, errNotLinux }

// Events returns an error.
func (e *Enforcer) Events(ctx context.Context, emit func(firewall.Event)) error { return errNotLinux }
