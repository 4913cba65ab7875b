package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/yagura/yagura/internal/policy"
	"github.com/yagura/yagura/internal/rollout"
	"github.com/yagura/yagura/internal/store"
)

// basePolicyName is the policy a new manager starts with; computers with
// no policy of their own get it.
const basePolicyName = "Base Policy"

// ensureBasePolicy creates the first policy and makes it the default, on a
// manager that has no policy at all. Several nodes starting at once may
// race: the loser's create fails on the unique name and it moves on.
func ensureBasePolicy(ctx context.Context, db *store.DB, log *slog.Logger) error {
	ps, err := db.ListPolicies(ctx)
	if err != nil {
		return err
	}
	if len(ps) > 0 {
		return nil
	}
	p, err := db.CreatePolicy(ctx, policy.Policy{
		Name:        basePolicyName,
		Description: "Created with the manager; new computers get it. 初期ポリシー: 新しいコンピューターに適用されます。",
	}, time.Now())
	if errors.Is(err, store.ErrConflict) {
		return nil // another node created it
	}
	if err != nil {
		return err
	}
	if err := db.PutSettings(ctx, map[string]string{rollout.KeyDefaultPolicy: strconv.Itoa(p.ID)}); err != nil {
		return fmt.Errorf("make %q the default policy: %w", basePolicyName, err)
	}
	log.Info("created the base policy", "policy", p.ID)
	return nil
}
