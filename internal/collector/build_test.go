package collector

import "github.com/yagura/yagura/internal/flowdecode/flowdecodetest"

// IPFIX template 300: IPv6 5-tuple, counters, interfaces, absolute times.
var ipfixTemplate300 = flowdecodetest.Set(2, flowdecodetest.TemplateBody(300,
	flowdecodetest.Field{27, 16}, flowdecodetest.Field{28, 16}, flowdecodetest.Field{7, 2}, flowdecodetest.Field{11, 2},
	flowdecodetest.Field{4, 1}, flowdecodetest.Field{6, 1}, flowdecodetest.Field{10, 4}, flowdecodetest.Field{14, 4},
	flowdecodetest.Field{1, 8}, flowdecodetest.Field{2, 8}, flowdecodetest.Field{152, 8}, flowdecodetest.Field{153, 8}))

func ipfixRecord300(src, dst string, sport, dport uint16, bytes, pkts uint64, startMs, endMs uint64) flowdecodetest.Wire {
	return flowdecodetest.Wire{}.IP(src).IP(dst).U16(sport).U16(dport).U8(17).U8(0).
		U32(10).U32(20).U64(bytes).U64(pkts).U64(startMs).U64(endMs)
}
