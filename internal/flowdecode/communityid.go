package flowdecode

import (
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"net/netip"
)

// IP protocol numbers with ports (or port equivalents) in the Community ID.
const (
	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58
	protoSCTP   = 132
)

// ICMP type pairs that Community ID treats as the two directions of one flow
// (https://github.com/corelight/community-id-spec, community-id.py, and
// pycommunityid's icmp.py, which also maps router advertisement back to
// solicitation). Types without a counterpart are one-way.
var (
	icmp4Counterpart = map[uint8]uint8{
		8: 0, 0: 8, // echo
		13: 14, 14: 13, // timestamp
		15: 16, 16: 15, // information
		10: 9, 9: 10, // router solicitation / advertisement
		17: 18, 18: 17, // address mask
	}
	icmp6Counterpart = map[uint8]uint8{
		128: 129, 129: 128, // echo
		133: 134, 134: 133, // router solicitation / advertisement
		135: 136, 136: 135, // neighbor solicitation / advertisement
		130: 131, 131: 130, // MLD query / report
		139: 140, 140: 139, // node information (who-are-you)
		144: 145, 145: 144, // home agent address discovery
	}
)

// CommunityID returns the Community ID v1 (seed 0, base64) of a flow. For
// ICMP and ICMPv6, srcPort is the ICMP type and dstPort the code. It returns
// "" when the addresses are invalid or of different families.
func CommunityID(src, dst netip.Addr, proto uint8, srcPort, dstPort uint16) string {
	if !src.IsValid() || !dst.IsValid() || src.Is4() != dst.Is4() {
		return ""
	}
	hasPorts := true
	oneWay := false
	switch proto {
	case protoTCP, protoUDP, protoSCTP:
	case protoICMP, protoICMPv6:
		table := icmp4Counterpart
		if proto == protoICMPv6 {
			table = icmp6Counterpart
		}
		typ := uint8(srcPort)
		if c, ok := table[typ]; ok {
			srcPort, dstPort = uint16(typ), uint16(c)
		} else {
			srcPort, dstPort, oneWay = uint16(typ), uint16(uint8(dstPort)), true
		}
	default:
		hasPorts = false
		srcPort, dstPort = 0, 0
	}
	if !oneWay {
		c := src.Compare(dst)
		if c > 0 || (c == 0 && srcPort > dstPort) {
			src, dst = dst, src
			srcPort, dstPort = dstPort, srcPort
		}
	}
	buf := make([]byte, 0, 2+16+16+2+4)
	buf = binary.BigEndian.AppendUint16(buf, 0) // seed
	buf = append(buf, src.AsSlice()...)
	buf = append(buf, dst.AsSlice()...)
	buf = append(buf, proto, 0)
	if hasPorts {
		buf = binary.BigEndian.AppendUint16(buf, srcPort)
		buf = binary.BigEndian.AppendUint16(buf, dstPort)
	}
	sum := sha1.Sum(buf)
	return "1:" + base64.StdEncoding.EncodeToString(sum[:])
}

// communityIDForFlow computes f's Community ID, translating the NetFlow ICMP
// convention (DstPort = type<<8|code) to the type/code pair.
func communityIDForFlow(f *Flow) string {
	sp, dp := f.SrcPort, f.DstPort
	if f.Proto == protoICMP || f.Proto == protoICMPv6 {
		sp, dp = f.DstPort>>8, f.DstPort&0xff
	}
	return CommunityID(f.SrcAddr.Unmap(), f.DstAddr.Unmap(), f.Proto, sp, dp)
}
