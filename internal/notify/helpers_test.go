package notify

import "time"

// testMessage is an alert with everything that needs escaping somewhere.
func testMessage(id string) Message {
	return Message{
		ID:         id,
		Kind:       "alert",
		Time:       time.Date(2026, 4, 1, 9, 30, 15, 123_000_000, time.UTC),
		Type:       "computer-offline",
		Severity:   "critical",
		Title:      "【Yagura】コンピューターがオフラインです | pipe",
		Text:       "経理-PC01 が 10 分間応答していません。\nkey=value, back\\slash, pipe |, ]bracket\n2行目",
		ComputerID: "c-0042",
		Hostname:   "経理-PC01",
		Fields: map[string]string{
			"src":    "192.0.2.10",
			"dst":    "2001:db8::1",
			"dpt":    "443",
			"action": "deny",
			"rule":   "ルール=1 | \\block",
		},
	}
}
