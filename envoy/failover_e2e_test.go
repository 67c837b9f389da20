package envoy_test

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aifirewall/aifirewall/internal/testenv"
	"github.com/aifirewall/aifirewall/internal/testinfra"
)

// load is clients streaming through Envoy in a loop, each as its own user,
// retrying 100 ms after a failure as a client would.
type load struct {
	stop    atomic.Bool
	wg      sync.WaitGroup
	mu      sync.Mutex
	done    []int64     // streams completed, by client
	refused []time.Time // 503 with Retry-After
	other   []string    // any other failure
}

func startLoad(base, prefix string, clients int) *load {
	l := &load{done: make([]int64, clients)}
	for i := range clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for !l.stop.Load() {
				err := streamOnce(base, fmt.Sprintf("%s-%d", prefix, i), "50")
				l.mu.Lock()
				switch {
				case err == nil:
					l.done[i]++
				case strings.HasPrefix(err.Error(), "status 503") && !strings.Contains(err.Error(), `retry-after ""`):
					l.refused = append(l.refused, time.Now())
				default:
					l.other = append(l.other, err.Error())
				}
				l.mu.Unlock()
				if err != nil {
					time.Sleep(100 * time.Millisecond)
				}
			}
		}()
	}
	return l
}

// finish stops the clients and checks that nothing failed but refusals.
func (l *load) finish(t *testing.T) (total int64) {
	t.Helper()
	l.stop.Store(true)
	l.wg.Wait()
	if len(l.other) > 0 {
		t.Errorf("%d requests failed otherwise than refused (503, Retry-After), e.g. %s", len(l.other), l.other[0])
	}
	for _, n := range l.done {
		total += n
	}
	return total
}

// Each completed stream: 11 prompt tokens and 12 words at gpt-4o-mini.
const loadCost = 11*miniIn + 12*miniOut

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

	l := startLoad(s.Envoy.URL(), "failover", 6)
	time.Sleep(2 * time.Second)
	killed := time.Now()
	sen.Primary.Stop()
	time.Sleep(12 * time.Second)
	total := l.finish(t)
	window := time.Duration(0)
	if len(l.refused) > 0 {
		window = l.refused[len(l.refused)-1].Sub(killed)
	}
	t.Logf("primary killed: %d requests refused (503, Retry-After) for %s after it; %d streams completed",
		len(l.refused), window.Round(10*time.Millisecond), total)
	// Sentinel's down-after (1 s), its election and promotion, the
	// client's switch to the new primary, and one retry interval.
	if window > 8*time.Second {
		t.Errorf("requests refused until %s after the primary died", window)
	}
	for i, n := range l.done {
		testenv.WaitSpentWithin(t, rdb, today(fmt.Sprintf("failover-%d", i)), n*loadCost, 20*time.Second)
	}
}

// A Redis Cluster slot moves to another master under streaming load, key
// by key (CLUSTER SETSLOT IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE), the
// way redis-cli --cluster reshard moves it: go-redis follows the -ASK and
// -MOVED redirects, and every answered stream is billed exactly once.
func TestClusterSlotMigrationUnderLoad(t *testing.T) {
	url := testinfra.StartRedisCluster(t)
	s := testenv.StartStack(t, testenv.StackOptions{Limit: "1000", Env: []string{"REDIS_URL=" + url, "LOG_LEVEL=warn"}})
	seed, _, _ := strings.Cut(strings.TrimPrefix(url, "redis+cluster://"), "?")
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{seed}})
	t.Cleanup(func() { rdb.Close() })
	ctx := context.Background()

	l := startLoad(s.Envoy.URL(), "slot", 4)
	time.Sleep(2 * time.Second)
	// Every key of user slot-0 shares the slot of its hash tag.
	slot, err := rdb.ClusterKeySlot(ctx, today("slot-0")).Result()
	if err != nil {
		t.Fatal(err)
	}
	moved := migrateSlot(t, rdb, int(slot))
	time.Sleep(2 * time.Second)
	total := l.finish(t)
	t.Logf("slot %d moved (%d keys) under load: %d requests refused, %d streams completed", slot, moved, len(l.refused), total)
	for i, n := range l.done {
		testenv.WaitSpentWithin(t, rdb, today(fmt.Sprintf("slot-%d", i)), n*loadCost, 20*time.Second)
	}
}

// migrateSlot moves slot to another master one key at a time, slowly, so
// that requests arrive while it is half moved; it returns how many keys
// moved.
func migrateSlot(t *testing.T, rdb *redis.ClusterClient, slot int) int {
	t.Helper()
	ctx := context.Background()
	nodes, err := rdb.ClusterNodes(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	type node struct{ id, addr string }
	var src node
	var others []node
	for _, line := range strings.Split(strings.TrimSpace(nodes), "\n") {
		f := strings.Fields(line)
		n := node{f[0], strings.Split(f[1], "@")[0]}
		owns := false
		for _, r := range f[8:] {
			var lo, hi int
			if c, _ := fmt.Sscanf(r, "%d-%d", &lo, &hi); c == 2 && lo <= slot && slot <= hi {
				owns = true
			} else if c == 1 && lo == slot {
				owns = true
			}
		}
		if owns {
			src = n
		} else {
			others = append(others, n)
		}
	}
	if src.id == "" || len(others) == 0 {
		t.Fatalf("no owner of slot %d or nowhere to move it:\n%s", slot, nodes)
	}
	dst := others[0]
	cli := func(n node, args ...string) string {
		host, port, _ := strings.Cut(n.addr, ":")
		out, err := exec.Command(testinfra.LookPath("redis-cli"), append([]string{"-h", host, "-p", port}, args...)...).CombinedOutput()
		if err != nil || strings.HasPrefix(string(out), "ERR") {
			t.Fatalf("redis-cli %v on %s: %v %s", args, n.addr, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	s := fmt.Sprint(slot)
	cli(dst, "cluster", "setslot", s, "importing", src.id)
	cli(src, "cluster", "setslot", s, "migrating", dst.id)
	moved := 0
	for {
		keys := strings.Fields(cli(src, "cluster", "getkeysinslot", s, "1"))
		if len(keys) == 0 {
			break
		}
		host, port, _ := strings.Cut(dst.addr, ":")
		cli(src, "migrate", host, port, "", "0", "5000", "keys", keys[0])
		moved++
		time.Sleep(150 * time.Millisecond)
	}
	for _, n := range append(others, src) {
		cli(n, "cluster", "setslot", s, "node", dst.id)
	}
	return moved
}
