package envoy_test

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aifirewall/aifirewall/internal/testenv"
	"github.com/aifirewall/aifirewall/internal/testinfra"
)

// Redis Sentinel's primary dies under streaming load (FAIL_MODE=closed):
// requests are refused with 503 and Retry-After only while the failover
// lasts; every stream that was answered completes and is billed exactly
// once on the new primary (settlements the old one never passed on are
// retried there: REDIS_WAIT_REPLICAS=1).
func TestSentinelFailoverUnderLoad(t *testing.T) {
	sen := testinfra.StartSentinel(t, time.Second)
	s := testenv.StartStack(t, testenv.StackOptions{Limit: "1000", Env: []string{
		"REDIS_URL=" + sen.URL, "FAIL_MODE=closed", "REDIS_TIMEOUT=500ms",
		"REDIS_WAIT_REPLICAS=1", "REDIS_WAIT_TIMEOUT=300ms", "LOG_LEVEL=warn"}})
	rdb := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: "mymaster", SentinelAddrs: sen.Addrs})
	t.Cleanup(func() { rdb.Close() })

	const clients = 6
	var stop atomic.Bool
	var wg sync.WaitGroup
	var mu sync.Mutex
	done := make([]int64, clients)
	var refused []time.Time
	var other []string
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				err := streamOnce(s.Envoy.URL(), fmt.Sprintf("failover-%d", i), "50")
				mu.Lock()
				switch {
				case err == nil:
					done[i]++
				case strings.HasPrefix(err.Error(), "status 503") && !strings.Contains(err.Error(), `retry-after ""`):
					refused = append(refused, time.Now())
				default:
					other = append(other, err.Error())
				}
				mu.Unlock()
				if err != nil {
					time.Sleep(100 * time.Millisecond) // a client's retry interval
				}
			}
		}()
	}
	time.Sleep(2 * time.Second)
	killed := time.Now()
	sen.Primary.Stop()
	time.Sleep(12 * time.Second)
	stop.Store(true)
	wg.Wait()

	if len(other) > 0 {
		t.Errorf("%d requests failed otherwise than refused, e.g. %s", len(other), other[0])
	}
	var total int64
	for _, n := range done {
		total += n
	}
	window := time.Duration(0)
	if len(refused) > 0 {
		window = refused[len(refused)-1].Sub(killed)
	}
	t.Logf("primary killed: %d requests refused (503, Retry-After) for %s after it; %d streams completed",
		len(refused), window.Round(10*time.Millisecond), total)
	// Sentinel's down-after (1 s), its election and promotion, the
	// client's switch to the new primary, and one retry interval.
	if window > 8*time.Second {
		t.Errorf("requests refused until %s after the primary died", window)
	}
	for i, n := range done {
		testenv.WaitSpentWithin(t, rdb, today(fmt.Sprintf("failover-%d", i)), n*(11*miniIn+12*miniOut), 20*time.Second)
	}
}
