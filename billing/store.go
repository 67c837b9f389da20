package billing

import (
	"context"
	"fmt"
	"time"
)

// Store keeps each user's spend and open reservations per budget day.
//
// Admission reserves a request's estimated cost atomically with the budget
// check, so concurrent requests cannot all pass a gate that only one of
// them fits through. Settlement replaces the reservation by the actual
// cost, exactly once per request id. A reservation whose sidecar died
// expires after its TTL, so a crash never blocks a user.
type Store interface {
	// Admit checks spent + reserved < limit for the user's day and, if it
	// holds, reserves a.Amount under a.RequestID until a.TTL passes.
	// An operator limit set with SetLimit replaces a.Limit.
	Admit(ctx context.Context, a Admission) (Budget, error)
	// Settle removes the request's reservation and adds s.Amount to the
	// spend, unless the request was settled before; it reports whether it
	// added anything.
	Settle(ctx context.Context, s Settlement) (applied bool, err error)
	// Extend grows the reservation of an admitted request (a.RequestID)
	// up to a.Ceiling, by what is free (limit - spent - reserved): all of
	// it when no other request holds a reservation there, else a.Amount
	// or half of it, whichever is more. The Budget it returns holds the
	// new reservation (Held); Admitted is false when the request holds
	// none (settled, or expired).
	Extend(ctx context.Context, a Admission) (Budget, error)
	// Renew extends the reservations of requests still running to the
	// store's now + ttl, so that only a dead sidecar's reservations expire.
	// A reservation already settled, or purged, is not brought back.
	Renew(ctx context.Context, holds []Hold, ttl time.Duration) error
	// Budget reads a user's day without changing it.
	Budget(ctx context.Context, user, day string, limit Nanos) (Budget, error)
	// Window reads a rolling window: the spend of buckets (see Admission)
	// and the reservations of day.
	Window(ctx context.Context, user, day string, buckets []string, limit Nanos) (Budget, error)
	// SetLimit sets (limit > 0) or clears (limit == 0) an operator override
	// of the user's daily limit.
	SetLimit(ctx context.Context, user string, limit Nanos) error
	// Users lists who has settled spend on day.
	Users(ctx context.Context, day string) ([]string, error)
	// Ping tells whether the store can be reached.
	Ping(ctx context.Context) error
	Close() error
}

// Admission is a request asking to spend up to Amount.
type Admission struct {
	User, Day, RequestID string
	Amount               Nanos // estimated cost, reserved while the request runs
	// Ceiling, when above Amount, makes the reservation half of what is
	// free (limit - spent - reserved) up to Ceiling, and never less than
	// Amount: the room of a stream that is cut off when it would pass
	// it. Halving what is free leaves room for the streams after it, and
	// keeps spent + every open reservation within the limit.
	Ceiling Nanos
	Limit   Nanos // the user's limit unless an operator override exists
	TTL     time.Duration
	// Buckets, when set, make the budget a rolling window: its spend is
	// the sum of these periods' spend (the current one first), and Day
	// names only its reservations.
	Buckets []string
}

// Hold names the reservation of one running request.
type Hold struct {
	User, Day, RequestID string
}

// Budget is a user's day as the store sees it.
type Budget struct {
	Admitted bool  // Admit only: the reservation was made
	Limit    Nanos // the limit in force
	Spent    Nanos // settled spend
	Reserved Nanos // open reservations, this request's included when admitted
	Held     Nanos // Admit only: this request's reservation
}

// Room is what an admitted request may spend before it passes the limit:
// its own reservation, or less when that already passes the limit.
func (b Budget) Room() Nanos {
	return max(0, min(b.Held, b.Limit-b.Spent-(b.Reserved-b.Held)))
}

// Remaining is what is left of the limit after spend and reservations.
func (b Budget) Remaining() Nanos { return max(b.Limit-b.Spent-b.Reserved, 0) }

// Settlement is the final charge of one request.
type Settlement struct {
	User      string `json:"user"`
	Day       string `json:"day"` // budget day, YYYY-MM-DD
	RequestID string `json:"request_id"`
	Amount    Nanos  `json:"amount_nanos"`
	// Bucket, when set, is the period the spend goes to (a rolling
	// window's current bucket), Day then naming the reservation only.
	Bucket string `json:"bucket,omitempty"`
}

// spendDay is the period a settlement's spend goes to.
func (s Settlement) spendDay() string {
	if s.Bucket != "" {
		return s.Bucket
	}
	return s.Day
}

// keyTTL keeps a day's spend (and its settled-request markers) around a
// few days past the day itself, for the usage API and late retries.
const keyTTL = 3 * 24 * time.Hour

// bucketTTL keeps a rolling window's spend buckets as long as the longest
// window (31 days) can count them.
const bucketTTL = 32 * 24 * time.Hour

// BudgetKey is the Redis key of user's spend on day. The braces are a
// Redis Cluster hash tag: every key of one user lives in one slot.
func BudgetKey(user, day string) string { return fmt.Sprintf("budget:{%s}:%s", user, day) }

func reservedKey(user, day string) string { return fmt.Sprintf("reserved:{%s}:%s", user, day) }
func expiryKey(user, day string) string   { return fmt.Sprintf("reservexp:{%s}:%s", user, day) }
func reservedSumKey(user, day string) string {
	return fmt.Sprintf("reservedsum:{%s}:%s", user, day)
}
func limitKey(user string) string { return fmt.Sprintf("limit:{%s}", user) }

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
