//go:build linux

package nftfw

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// snapLen is how much of a logged packet NFLOG copies: the IP header, IPv6
// extension headers and the transport header fit.
const snapLen = 256

// elemsPerMessage keeps each set-element message well under netlink's
// 64 KiB attribute limit.
const elemsPerMessage = 1024

// emitter queues the netlink messages of a plan on a Conn. It counts them,
// so that the socket's buffers can be sized for one batch.
type emitter struct {
	cc    *nftables.Conn
	cfg   Config
	msgs  int
	setID uint32
}

func family(f string) nftables.TableFamily {
	switch f {
	case famARP:
		return nftables.TableFamilyARP
	case famNetdev:
		return nftables.TableFamilyNetdev
	}
	return nftables.TableFamilyINet
}

// ourTables are the tables Apply replaces and Remove deletes.
func ourTables(name string) []*nftables.Table {
	return []*nftables.Table{
		{Name: name, Family: nftables.TableFamilyINet},
		{Name: name, Family: nftables.TableFamilyARP},
		{Name: name, Family: nftables.TableFamilyNetdev},
	}
}

// deleteOurs queues the deletion of our tables, whether they exist or not:
// adding a table that exists is a no-op, so add-then-delete never fails.
func (em *emitter) deleteOurs() {
	for _, t := range ourTables(em.cfg.Table) {
		em.cc.AddTable(t)
		em.cc.DelTable(t)
		em.msgs += 2
	}
}

// plan queues the tables of pl.
func (em *emitter) plan(pl *plan) error {
	for _, pt := range pl.tables {
		if err := em.table(pt); err != nil {
			return fmt.Errorf("%s table: %w", pt.family, err)
		}
	}
	return nil
}

type tableEmitter struct {
	*emitter
	t      *nftables.Table
	chains map[string]*nftables.Chain
	sets   map[string]*nftables.Set // by key type and content
}

func (em *emitter) table(pt *ptable) error {
	te := &tableEmitter{
		emitter: em,
		t:       &nftables.Table{Name: em.cfg.Table, Family: family(pt.family)},
		chains:  map[string]*nftables.Chain{},
		sets:    map[string]*nftables.Set{},
	}
	em.cc.AddTable(te.t)
	em.msgs++
	for _, l := range []struct {
		name string
		rate uint32
	}{{limitDrop, em.cfg.DropLogRate}, {limitLogOnly, em.cfg.LogOnlyRate}} {
		em.cc.AddObj(&nftables.NamedObj{Table: te.t, Name: l.name, Type: nftables.ObjTypeLimit,
			Obj: &expr.Limit{Type: expr.LimitTypePkts, Rate: uint64(l.rate), Unit: expr.LimitTimeSecond, Burst: l.rate}})
		em.msgs++
	}
	for _, name := range counterNames {
		em.cc.AddObj(&nftables.NamedObj{Table: te.t, Name: name, Type: nftables.ObjTypeCounter, Obj: &expr.Counter{}})
		em.msgs++
	}
	// Chains first: rules jump to chains defined later in the plan.
	for _, pc := range pt.chains {
		c := &nftables.Chain{Name: pc.name, Table: te.t}
		if pc.hook != "" {
			hook, err := hookNum(pt.family, pc.hook)
			if err != nil {
				return err
			}
			accept := nftables.ChainPolicyAccept
			c.Hooknum = nftables.ChainHookRef(hook)
			c.Device = pc.device
			c.Priority = nftables.ChainPriorityRef(nftables.ChainPriority(pc.prio))
			c.Type = nftables.ChainTypeFilter
			c.Policy = &accept
		}
		te.chains[pc.name] = em.cc.AddChain(c)
		em.msgs++
	}
	for _, pc := range pt.chains {
		for i, r := range pc.rules {
			exprs, err := te.rule(r)
			if err != nil {
				return fmt.Errorf("chain %s rule %d: %w", pc.name, i+1, err)
			}
			em.cc.AddRule(&nftables.Rule{Table: te.t, Chain: te.chains[pc.name], Exprs: exprs})
			em.msgs++
		}
	}
	return nil
}

// Hooks of the arp family (linux/netfilter_arp.h), which x/sys/unix lacks.
const (
	nfARPIn  = 0
	nfARPOut = 1
)

func hookNum(fam, hook string) (nftables.ChainHook, error) {
	switch fam {
	case famARP:
		switch hook {
		case hookInput:
			return nfARPIn, nil
		case hookOutput:
			return nfARPOut, nil
		}
	case famNetdev:
		switch hook {
		case hookIngress:
			return unix.NF_NETDEV_INGRESS, nil
		case hookEgress:
			return unix.NF_NETDEV_EGRESS, nil
		}
	default:
		switch hook {
		case hookPrerouting:
			return unix.NF_INET_PRE_ROUTING, nil
		case hookInput:
			return unix.NF_INET_LOCAL_IN, nil
		case hookOutput:
			return unix.NF_INET_LOCAL_OUT, nil
		}
	}
	return 0, fmt.Errorf("no %s hook in the %s family", hook, fam)
}

func (te *tableEmitter) rule(r prule) ([]expr.Any, error) {
	var out []expr.Any
	for _, m := range r.match {
		es, err := te.match(m)
		if err != nil {
			return nil, err
		}
		out = append(out, es...)
	}
	for _, s := range r.stmts {
		switch s.kind {
		case sCounter:
			out = append(out, &expr.Objref{Type: int(nftables.ObjTypeCounter), Name: s.name})
		case sLimit:
			out = append(out, &expr.Objref{Type: int(nftables.ObjTypeLimit), Name: s.name})
		case sLog:
			out = append(out, &expr.Log{
				Key:     1<<unix.NFTA_LOG_GROUP | 1<<unix.NFTA_LOG_PREFIX | 1<<unix.NFTA_LOG_SNAPLEN,
				Group:   te.cfg.LogGroup,
				Snaplen: snapLen,
				Data:    []byte(s.prefix),
			})
		case sNotrack:
			out = append(out, &expr.Notrack{})
		case sSetMark:
			out = append(out,
				&expr.Immediate{Register: 1, Data: binaryutil.NativeEndian.PutUint32(s.mark)},
				&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1})
		}
	}
	switch r.verdict.kind {
	case vAccept:
		out = append(out, &expr.Verdict{Kind: expr.VerdictAccept})
	case vDrop:
		out = append(out, &expr.Verdict{Kind: expr.VerdictDrop})
	case vJump:
		out = append(out, &expr.Verdict{Kind: expr.VerdictJump, Chain: r.verdict.chain})
	case vGoto:
		out = append(out, &expr.Verdict{Kind: expr.VerdictGoto, Chain: r.verdict.chain})
	}
	return out, nil
}

func op(not bool) expr.CmpOp {
	if not {
		return expr.CmpOpNeq
	}
	return expr.CmpOpEq
}

// Route types of the fib expression (linux/rtnetlink.h) that mean the
// packet is for this host.
var localRouteTypes = []uint32{unix.RTN_LOCAL, unix.RTN_BROADCAST, unix.RTN_ANYCAST, unix.RTN_MULTICAST}

func (te *tableEmitter) match(m pmatch) ([]expr.Any, error) {
	load := func(base expr.PayloadBase, off, n uint32) expr.Any {
		return &expr.Payload{DestRegister: 1, Base: base, Offset: off, Len: n}
	}
	switch m.kind {
	case mNfproto:
		v := byte(unix.NFPROTO_IPV4)
		if m.fam == 6 {
			v = unix.NFPROTO_IPV6
		}
		return []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{v}},
		}, nil
	case mL4proto:
		keys := make([][2][]byte, len(m.protos))
		for i, p := range m.protos {
			keys[i] = [2][]byte{{p}, {p}}
		}
		return te.lookup(&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, nftables.TypeInetProto, false, keys, m.not)
	case mAddr:
		var ld expr.Any
		typ := nftables.TypeIPAddr
		if m.fam == 4 {
			off := uint32(16)
			if m.src {
				off = 12
			}
			ld = load(expr.PayloadBaseNetworkHeader, off, 4)
		} else {
			off := uint32(24)
			if m.src {
				off = 8
			}
			ld = load(expr.PayloadBaseNetworkHeader, off, 16)
			typ = nftables.TypeIP6Addr
		}
		keys := make([][2][]byte, len(m.addrs))
		for i, r := range m.addrs {
			keys[i] = [2][]byte{r.From.AsSlice(), r.To.AsSlice()}
		}
		return te.lookup(ld, typ, true, keys, m.not)
	case mMAC:
		off := uint32(0)
		if m.src {
			off = 6
		}
		keys := make([][2][]byte, len(m.macs))
		for i, mac := range m.macs {
			keys[i] = [2][]byte{slices.Clone(mac[:]), slices.Clone(mac[:])}
		}
		return te.lookup(load(expr.PayloadBaseLLHeader, off, 6), nftables.TypeEtherAddr, false, keys, m.not)
	case mPort:
		off := uint32(2)
		if m.src {
			off = 0
		}
		keys := make([][2][]byte, len(m.ports))
		for i, r := range m.ports {
			keys[i] = [2][]byte{binary.BigEndian.AppendUint16(nil, r.Lo), binary.BigEndian.AppendUint16(nil, r.Hi)}
		}
		return te.lookup(load(expr.PayloadBaseTransportHeader, off, 2), nftables.TypeInetService, true, keys, m.not)
	case mTCPFlags:
		return []expr.Any{
			load(expr.PayloadBaseTransportHeader, 13, 1),
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{m.mask}, Xor: []byte{0}},
			&expr.Cmp{Op: op(m.not), Register: 1, Data: []byte{m.value}},
		}, nil
	case mICMP:
		switch {
		case m.icmpType >= 0 && m.icmpCode >= 0:
			return []expr.Any{
				load(expr.PayloadBaseTransportHeader, 0, 2),
				&expr.Cmp{Op: op(m.not), Register: 1, Data: []byte{byte(m.icmpType), byte(m.icmpCode)}},
			}, nil
		case m.icmpType >= 0:
			return []expr.Any{
				load(expr.PayloadBaseTransportHeader, 0, 1),
				&expr.Cmp{Op: op(m.not), Register: 1, Data: []byte{byte(m.icmpType)}},
			}, nil
		case m.icmpCode >= 0:
			return []expr.Any{
				load(expr.PayloadBaseTransportHeader, 1, 1),
				&expr.Cmp{Op: op(m.not), Register: 1, Data: []byte{byte(m.icmpCode)}},
			}, nil
		}
		return nil, nil
	case mCtState:
		return []expr.Any{
			&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(m.ct), Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
		}, nil
	case mEtherType:
		keys := make([][2][]byte, len(m.etherTypes))
		for i, et := range m.etherTypes {
			k := binary.BigEndian.AppendUint16(nil, et)
			keys[i] = [2][]byte{k, k}
		}
		return te.lookup(&expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: 1}, nftables.TypeEtherType, false, keys, m.not)
	case mLoopback:
		// The loopback device is index 1 in every network namespace.
		key := expr.MetaKeyOIF
		if m.src {
			key = expr.MetaKeyIIF
		}
		return []expr.Any{&expr.Meta{Key: key, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(1)}}, nil
	case mNotLocal:
		out := []expr.Any{&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true}}
		for _, t := range localRouteTypes {
			out = append(out, &expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(t)})
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown match %d", m.kind)
}

// lookup compares the value ld loads with keys (inclusive ranges, as
// big-endian bytes): one value with cmp, one range with range, more with a
// set (an interval set when interval). Sets with the same content are
// shared within the table.
func (te *tableEmitter) lookup(ld expr.Any, typ nftables.SetDatatype, interval bool, keys [][2][]byte, not bool) ([]expr.Any, error) {
	keys = mergeRanges(keys, interval)
	switch {
	case len(keys) == 0:
		return nil, fmt.Errorf("empty %s list", typ.Name)
	case len(keys) == 1 && bytes.Equal(keys[0][0], keys[0][1]):
		return []expr.Any{ld, &expr.Cmp{Op: op(not), Register: 1, Data: keys[0][0]}}, nil
	case len(keys) == 1 && interval:
		return []expr.Any{ld, &expr.Range{Op: op(not), Register: 1, FromData: keys[0][0], ToData: keys[0][1]}}, nil
	}
	set, err := te.set(typ, interval, keys)
	if err != nil {
		return nil, err
	}
	return []expr.Any{ld, &expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID, Invert: not}}, nil
}

func (te *tableEmitter) set(typ nftables.SetDatatype, interval bool, keys [][2][]byte) (*nftables.Set, error) {
	var id bytes.Buffer
	fmt.Fprintf(&id, "%s/%v/", typ.Name, interval)
	for _, k := range keys {
		id.Write(k[0])
		id.Write(k[1])
	}
	if s, ok := te.sets[id.String()]; ok {
		return s, nil
	}
	var elems []nftables.SetElement
	for _, k := range keys {
		if !interval {
			elems = append(elems, nftables.SetElement{Key: k[0]})
			continue
		}
		// An interval is its first key and, flagged as the end, the key
		// after its last; a range up to the largest key has no end.
		elems = append(elems, nftables.SetElement{Key: k[0]})
		if next, ok := increment(k[1]); ok {
			elems = append(elems, nftables.SetElement{Key: next, IntervalEnd: true})
		}
	}
	te.setID++
	s := &nftables.Set{
		Table:    te.t,
		ID:       te.setID,
		Name:     fmt.Sprintf("s%d", te.setID),
		Constant: true,
		Interval: interval,
		KeyType:  typ,
	}
	if err := te.cc.AddSet(s, nil); err != nil {
		return nil, err
	}
	te.msgs++
	for chunk := range slices.Chunk(elems, elemsPerMessage) {
		if err := te.cc.SetAddElements(s, chunk); err != nil {
			return nil, err
		}
		te.msgs++
	}
	te.sets[id.String()] = s
	return s, nil
}

// mergeRanges sorts inclusive big-endian ranges and joins overlapping and
// (for intervals) adjacent ones, as interval sets need. Compile's output is
// already so; a hand-built Program may not be.
func mergeRanges(keys [][2][]byte, interval bool) [][2][]byte {
	keys = slices.Clone(keys)
	slices.SortFunc(keys, func(a, b [2][]byte) int { return bytes.Compare(a[0], b[0]) })
	out := keys[:0]
	for _, k := range keys {
		if n := len(out); n > 0 && !interval {
			if bytes.Equal(out[n-1][0], k[0]) {
				continue
			}
		} else if n > 0 {
			last := &out[n-1]
			next, ok := increment(last[1])
			if bytes.Compare(k[0], last[1]) <= 0 || ok && bytes.Equal(k[0], next) {
				if bytes.Compare(k[1], last[1]) > 0 {
					last[1] = k[1]
				}
				continue
			}
		}
		out = append(out, k)
	}
	return out
}

// increment returns b+1 as a big-endian number; ok is false on overflow.
func increment(b []byte) ([]byte, bool) {
	out := slices.Clone(b)
	for i := len(out) - 1; i >= 0; i-- {
		out[i]++
		if out[i] != 0 {
			return out, true
		}
	}
	return nil, false
}
