package storetest

import (
	"testing"

	"github.com/yagura/yagura/internal/store"
)

func testPolicies(t *testing.T, db *store.DB) {}
