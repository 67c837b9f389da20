package billing

import (
	"context"
	"fmt"
	"time"
)

// Store keeps each user's spend per budget day. Implementations must make
// Settle idempotent per request id: settling the same request twice bills
// it once, so a retried settlement is always safe.
type Store interface {
	// Spent returns what user has spent on day.
	Spent(ctx context.Context, user, day string) (Nanos, error)
	// Settle adds s.Amount to the user's spend on s.Day unless a settlement
	// with the same RequestID was applied before; it reports whether it did.
	Settle(ctx context.Context, s Settlement) (applied bool, err error)
	// Ping tells whether the store can be reached.
	Ping(ctx context.Context) error
	Close() error
}

// Settlement is the final charge of one request.
type Settlement struct {
	User      string
	Day       string // budget day, YYYY-MM-DD
	RequestID string
	Amount    Nanos
}

// keyTTL keeps a day's spend (and its settled-request markers) around a
// few days past the day itself, for the usage API and late retries.
const keyTTL = 3 * 24 * time.Hour

// BudgetKey is the Redis key of user's spend on day. The braces are a
// Redis Cluster hash tag: every key of one user lives in one slot.
func BudgetKey(user, day string) string { return fmt.Sprintf("budget:{%s}:%s", user, day) }

func settledKey(user, requestID string) string {
	return fmt.Sprintf("settled:{%s}:%s", user, requestID)
}

// Day returns the budget day of t in loc, as YYYY-MM-DD.
func Day(t time.Time, loc *time.Location) string { return t.In(loc).Format(time.DateOnly) }

// NextReset returns the next midnight in loc after t: when the budget
// resets. Computed from the calendar date, so it is right across DST days.
func NextReset(t time.Time, loc *time.Location) time.Time {
	l := t.In(loc)
	return time.Date(l.Year(), l.Month(), l.Day()+1, 0, 0, 0, 0, loc)
}
