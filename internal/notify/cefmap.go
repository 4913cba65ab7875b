package notify

import (
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/yagura/yagura/internal/cef"
)

// CEF header constants.
const (
	CEFVendor  = "Yagura"
	CEFProduct = "Yagura"
)

// CEFSeverity maps Yagura's severity onto CEF's 0-10 scale: critical 10,
// error 8, warning 5, info 3. CEF reads 0-3 as Low, 4-6 Medium, 7-8 High
// and 9-10 Very-High, so each level lands in its own band. Anything else is
// "Unknown".
func CEFSeverity(severity string) string {
	switch strings.ToLower(severity) {
	case "critical":
		return "10"
	case "error":
		return "8"
	case "warning":
		return "5"
	case "info":
		return "3"
	}
	return "Unknown"
}

// ownKeys are the extension keys that CEFRecord fills from Message itself;
// a Field of the same name goes to a custom string instead of overriding
// them.
var ownKeys = map[string]bool{"rt": true, "externalId": true, "cat": true, "dvchost": true, "deviceExternalId": true, "msg": true}

// fieldAliases are Yagura field names with a CEF key of another name.
var fieldAliases = map[string]string{"action": "act", "protocol": "proto"}

// cefKeyKind says how a CEF dictionary key's value is checked; a Field whose
// value does not fit is treated as unknown (a custom string), so that a SIEM
// never drops the whole event over one typed field.
type cefKeyKind int

const (
	cefString cefKeyKind = iota
	cefIP
	cefPort
	cefInt
	cefMAC
)

// cefKeys is the CEF key dictionary ("Implementing ArcSight CEF"), short
// names only, with the type checks that matter.
var cefKeys = map[string]cefKeyKind{
	"act": cefString, "app": cefString, "cnt": cefInt, "destinationDnsDomain": cefString,
	"destinationServiceName": cefString, "destinationTranslatedAddress": cefIP,
	"destinationTranslatedPort": cefPort, "deviceDirection": cefInt, "deviceDnsDomain": cefString,
	"deviceFacility": cefString, "deviceInboundInterface": cefString, "deviceNtDomain": cefString,
	"deviceOutboundInterface": cefString, "devicePayloadId": cefString, "deviceProcessName": cefString,
	"deviceTranslatedAddress": cefIP, "dhost": cefString, "dmac": cefMAC, "dntdom": cefString,
	"dpid": cefInt, "dpriv": cefString, "dproc": cefString, "dpt": cefPort, "dst": cefIP,
	"dtz": cefString, "duid": cefString, "duser": cefString, "dvc": cefIP, "dvcmac": cefMAC,
	"dvcpid": cefInt, "end": cefString, "fileCreateTime": cefString, "fileHash": cefString,
	"fileId": cefString, "fileModificationTime": cefString, "filePath": cefString,
	"filePermission": cefString, "fileType": cefString, "fname": cefString, "fsize": cefInt,
	"in": cefInt, "oldFileCreateTime": cefString, "oldFileHash": cefString, "oldFileId": cefString,
	"oldFileModificationTime": cefString, "oldFileName": cefString, "oldFilePath": cefString,
	"oldFilePermission": cefString, "oldFileSize": cefInt, "oldFileType": cefString, "out": cefInt,
	"outcome": cefString, "proto": cefString, "reason": cefString, "request": cefString,
	"requestClientApplication": cefString, "requestContext": cefString, "requestCookies": cefString,
	"requestMethod": cefString, "shost": cefString, "smac": cefMAC, "sntdom": cefString,
	"sourceDnsDomain": cefString, "sourceServiceName": cefString, "sourceTranslatedAddress": cefIP,
	"sourceTranslatedPort": cefPort, "spid": cefInt, "spriv": cefString, "sproc": cefString,
	"spt": cefPort, "src": cefIP, "start": cefString, "suid": cefString, "suser": cefString,
	"cs1": cefString, "cs2": cefString, "cs3": cefString, "cs4": cefString, "cs5": cefString, "cs6": cefString,
	"cs1Label": cefString, "cs2Label": cefString, "cs3Label": cefString, "cs4Label": cefString,
	"cs5Label": cefString, "cs6Label": cefString,
	"cn1": cefInt, "cn2": cefInt, "cn3": cefInt, "cn1Label": cefString, "cn2Label": cefString, "cn3Label": cefString,
	"cfp1": cefString, "cfp2": cefString, "cfp3": cefString, "cfp4": cefString,
	"cfp1Label": cefString, "cfp2Label": cefString, "cfp3Label": cefString, "cfp4Label": cefString,
	"c6a1": cefIP, "c6a3": cefIP, "c6a4": cefIP, "c6a1Label": cefString, "c6a3Label": cefString, "c6a4Label": cefString,
	"deviceCustomDate1": cefString, "deviceCustomDate2": cefString,
	"deviceCustomDate1Label": cefString, "deviceCustomDate2Label": cefString,
	"flexString1": cefString, "flexString2": cefString, "flexString1Label": cefString, "flexString2Label": cefString,
}

func cefValueFits(kind cefKeyKind, v string) bool {
	switch kind {
	case cefIP:
		_, err := netip.ParseAddr(v)
		return err == nil
	case cefPort:
		n, err := strconv.Atoi(v)
		return err == nil && n >= 0 && n <= 65535
	case cefInt:
		_, err := strconv.ParseInt(v, 10, 64)
		return err == nil
	case cefMAC:
		_, err := net.ParseMAC(v)
		return err == nil
	}
	return true
}

// CEFRecord maps a message onto a CEF record:
//
//	header: Yagura|Yagura|<version>|<Type>|<Title>|<CEFSeverity(Severity)>
//	rt=<Time, ms since the epoch> externalId=<ID> cat=<Kind>
//	dvchost=<Hostname> deviceExternalId=<ComputerID> msg=<Text>
//
// then the Fields, sorted by name:
//
//   - a name that is a CEF key (src, dst, spt, dpt, proto, act, suser,
//     fname, fileHash, cs1, cs1Label, ...), or an alias of one (action→act,
//     protocol→proto), is written under that key when its value fits the
//     key's type (an IP address for src/dst, 0-65535 for ports, an integer
//     for counts, a MAC address for smac/dmac);
//   - any other field (including one whose value does not fit, or one named
//     like a key set above) takes the next free custom string cs1..cs6,
//     with csNLabel set to the field's name;
//   - fields left over when cs1..cs6 are used up are appended to msg as
//     "name=value" lines, so nothing is lost.
//
// Strings are made valid UTF-8, and control characters other than line
// breaks become spaces (syslog receivers rewrite them, rsyslog as "#011").
// Empty Hostname, ComputerID and Text are left out.
func CEFRecord(m Message, productVersion string) cef.Record {
	r := cef.Record{
		DeviceVendor:  CEFVendor,
		DeviceProduct: CEFProduct,
		DeviceVersion: clean(productVersion),
		SignatureID:   clean(m.Type),
		Name:          clean(m.Title),
		Severity:      CEFSeverity(m.Severity),
	}
	add := func(k, v string) { r.Extensions = append(r.Extensions, cef.Extension{Key: k, Value: clean(v)}) }
	add("rt", strconv.FormatInt(m.Time.UnixMilli(), 10))
	add("externalId", m.ID)
	add("cat", m.Kind)
	if m.Hostname != "" {
		add("dvchost", m.Hostname)
	}
	if m.ComputerID != "" {
		add("deviceExternalId", m.ComputerID)
	}

	names := slices.Sorted(maps.Keys(m.Fields))
	used := map[string]bool{}
	var other []string
	for _, name := range names {
		key := name
		if a, ok := fieldAliases[name]; ok {
			key = a
		}
		kind, known := cefKeys[key]
		if !known || ownKeys[key] || used[key] || !cefValueFits(kind, m.Fields[name]) {
			other = append(other, name)
			continue
		}
		used[key] = true
	}
	var extra []string // "name=value" lines for msg
	slot := 1
	var custom []cef.Extension
	for _, name := range other {
		for slot <= 6 && (used["cs"+strconv.Itoa(slot)] || used["cs"+strconv.Itoa(slot)+"Label"]) {
			slot++
		}
		if slot > 6 {
			extra = append(extra, clean(name)+"="+clean(m.Fields[name]))
			continue
		}
		n := strconv.Itoa(slot)
		custom = append(custom, cef.Extension{Key: "cs" + n, Value: clean(m.Fields[name])}, cef.Extension{Key: "cs" + n + "Label", Value: clean(name)})
		slot++
	}
	text := m.Text
	if len(extra) > 0 {
		if text != "" {
			text += "\n"
		}
		text += strings.Join(extra, "\n")
	}
	if text != "" {
		add("msg", text)
	}
	for _, name := range names {
		key := name
		if a, ok := fieldAliases[name]; ok {
			key = a
		}
		if used[key] && !slices.Contains(other, name) {
			add(key, m.Fields[name])
		}
	}
	r.Extensions = append(r.Extensions, custom...)
	return r
}

// clean makes s valid UTF-8 and turns control characters other than CR and
// LF into spaces.
func clean(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if strings.IndexFunc(s, isOddControl) < 0 {
		return s
	}
	return strings.Map(func(r rune) rune {
		if isOddControl(r) {
			return ' '
		}
		return r
	}, s)
}

func isOddControl(r rune) bool {
	return (r < 0x20 && r != '\n' && r != '\r') || r == 0x7f || (r >= 0x80 && r < 0xa0)
}

// msgTime is m.Time, or now when it is unset or cannot be written as a
// four-digit year.
func msgTime(m Message, now func() time.Time) time.Time {
	if m.Time.IsZero() || m.Time.Year() < 1 || m.Time.Year() > 9999 {
		return now()
	}
	return m.Time
}
