package flowdecode

import "github.com/yagura/yagura/internal/flowdecode/flowdecodetest"

// v5Datagram is a NetFlow v5 datagram sampled 1 in 100 (mode 1) with a TCP
// and an ICMP record.
func v5Datagram() []byte {
	return flowdecodetest.V5Datagram(0x4000|100,
		flowdecodetest.V5Record("10.0.0.1", "10.0.0.2", 40000, 443, 6, 10, 1500),
		flowdecodetest.V5Record("192.0.2.7", "198.51.100.9", 0, 8<<8, 1, 1, 84))
}
