//go:build linux

package nftfw

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/yagura/yagura/internal/firewall"
)

// Enforcer enforces firewall programs with nftables. Apply and Remove may
// be called from several goroutines (they are serialised); Events runs
// beside them.
type Enforcer struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex // serialises Apply, Remove and the carried counters
	carried kernelCounters

	rules atomic.Pointer[ruleTables]

	read, undecodable, overruns atomic.Uint64

	// eventsBound, when set, is called once Events has bound the group
	// (tests).
	eventsBound func()
}

// ruleTables are the rules of the current program and the one before, so
// that events logged just before a swap still find their rule's name.
type ruleTables struct{ cur, prev map[int]ruleInfo }

type kernelCounters struct {
	dropsLogged, dropsSuppressed, logMatched, logLogged uint64
}

func (k *kernelCounters) add(o kernelCounters) {
	k.dropsLogged += o.dropsLogged
	k.dropsSuppressed += o.dropsSuppressed
	k.logMatched += o.logMatched
	k.logLogged += o.logLogged
}

// New returns an inert Enforcer: it does no I/O until Apply.
func New(cfg Config, log *slog.Logger) (*Enforcer, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &Enforcer{cfg: cfg, log: log.With("component", "nftfw")}
	e.rules.Store(&ruleTables{cur: map[int]ruleInfo{}, prev: map[int]ruleInfo{}})
	return e, nil
}

// Tables returns the tables the enforcer owns, as nft names them
// ("inet yagura", "arp yagura", "netdev yagura").
func (e *Enforcer) Tables() []string {
	return []string{"inet " + e.cfg.Table, "arp " + e.cfg.Table, "netdev " + e.cfg.Table}
}

// ethernetDevices lists the namespace's Ethernet devices, whose frames
// other than IP and ARP the netdev table filters.
func (e *Enforcer) ethernetDevices() ([]string, error) {
	c, err := netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{NetNS: e.cfg.NetNS})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	msgs, err := c.Execute(netlink.Message{
		Header: netlink.Header{Type: unix.RTM_GETLINK, Flags: netlink.Request | netlink.Dump},
		Data:   make([]byte, unix.SizeofIfInfomsg),
	})
	if err != nil {
		return nil, err
	}
	var names []string
	for _, m := range msgs {
		if len(m.Data) < unix.SizeofIfInfomsg || binary.NativeEndian.Uint16(m.Data[2:4]) != unix.ARPHRD_ETHER {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[unix.SizeofIfInfomsg:])
		if err != nil {
			return nil, err
		}
		for ad.Next() {
			if ad.Type() == unix.IFLA_IFNAME {
				names = append(names, ad.String())
			}
		}
	}
	slices.Sort(names)
	return names, nil
}

// conn returns a netlink connection for queries.
func (e *Enforcer) conn() (*nftables.Conn, error) {
	if e.cfg.NetNS != 0 {
		return nftables.New(nftables.WithNetNSFd(e.cfg.NetNS))
	}
	return nftables.New()
}

// Apply compiles p and replaces the enforcer's tables with it in one
// netlink transaction: the old rules apply until the new ones do, with no
// moment in between. Other tables, and connection tracking, are left as
// they are. A program [Check] refuses is not applied (the old rules stay);
// the error wraps [errors.ErrUnsupported].
func (e *Enforcer) Apply(ctx context.Context, p *firewall.Program, opt firewall.Options) error {
	start := time.Now()
	if err := Check(p); err != nil {
		return fmt.Errorf("nftfw: %w", err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	old, _ := e.counters() // absent before the first Apply
	var msgs int
	for attempt := 0; ; attempt++ {
		devices, err := e.ethernetDevices()
		if err != nil {
			return fmt.Errorf("nftfw: list devices: %w", err)
		}
		pl, err := buildPlan(p, opt, e.cfg, devices)
		if err != nil {
			return fmt.Errorf("nftfw: compile: %w", err)
		}
		msgs, err = e.transact(ctx, func(em *emitter) error {
			em.deleteOurs()
			return em.plan(pl)
		})
		if err == nil {
			break
		}
		// A device that went away since we listed them: list again.
		if attempt == 0 && errors.Is(err, syscall.ENODEV) {
			continue
		}
		return fmt.Errorf("nftfw: apply %d rules (%d netlink messages): %w", ruleCount(p), msgs, err)
	}
	e.carried.add(old)
	rt := e.rules.Load()
	e.rules.Store(&ruleTables{cur: ruleMap(p), prev: rt.cur})
	e.log.Debug("firewall applied", "rules", ruleCount(p), "stateful", opt.Stateful, "messages", msgs, "took", time.Since(start))
	return nil
}

func ruleCount(p *firewall.Program) int {
	if p == nil {
		return 0
	}
	return len(p.Rules)
}

// Remove deletes the enforcer's tables, and nothing else, in one
// transaction. Removing what is not there is not an error.
func (e *Enforcer) Remove(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	old, _ := e.counters()
	if _, err := e.transact(ctx, func(em *emitter) error { em.deleteOurs(); return nil }); err != nil {
		return fmt.Errorf("nftfw: remove tables %q: %w", e.cfg.Table, err)
	}
	e.carried.add(old)
	return nil
}

// counters reads the named counters of our tables.
func (e *Enforcer) counters() (kernelCounters, error) {
	var k kernelCounters
	cc, err := e.conn()
	if err != nil {
		return k, err
	}
	var errs []error
	for _, t := range ourTables(e.cfg.Table) {
		objs, err := cc.GetNamedObjects(t)
		if err != nil {
			if errors.Is(err, syscall.ENOENT) {
				continue
			}
			errs = append(errs, err)
			continue
		}
		for _, o := range objs {
			no, ok := o.(*nftables.NamedObj)
			if !ok {
				continue
			}
			c, ok := no.Obj.(*expr.Counter)
			if !ok {
				continue
			}
			switch no.Name {
			case ctrDropLogged:
				k.dropsLogged += c.Packets
			case ctrDropSuppressed:
				k.dropsSuppressed += c.Packets
			case ctrLogMatched:
				k.logMatched += c.Packets
			case ctrLogLogged:
				k.logLogged += c.Packets
			}
		}
	}
	return k, errors.Join(errs...)
}

// Stats returns the enforcer's counters.
func (e *Enforcer) Stats(ctx context.Context) (Stats, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	k, err := e.counters()
	k.add(e.carried)
	s := Stats{
		DropsLogged:       k.dropsLogged,
		DropsSuppressed:   k.dropsSuppressed,
		LogOnlyLogged:     k.logLogged,
		LogOnlySuppressed: k.logMatched - min(k.logMatched, k.logLogged),
		Read:              e.read.Load(),
		Undecodable:       e.undecodable.Load(),
		Overruns:          e.overruns.Load(),
	}
	if err != nil {
		return s, fmt.Errorf("nftfw: read counters: %w", err)
	}
	return s, ctx.Err()
}

func (e *Enforcer) rule(id int) (ruleInfo, bool) {
	rt := e.rules.Load()
	if ri, ok := rt.cur[id]; ok {
		return ri, true
	}
	ri, ok := rt.prev[id]
	return ri, ok
}
