package storetest

import (
	"testing"

	"github.com/yagura/yagura/internal/store"
)

func testFirewallRules(t *testing.T, db *store.DB) {}

func testFirewallLists(t *testing.T, db *store.DB) {}
