package envoy_test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aifirewall/aifirewall/envoy"
	"github.com/aifirewall/aifirewall/internal/fakellm"
	"github.com/aifirewall/aifirewall/internal/testenv"
	"github.com/aifirewall/aifirewall/internal/testinfra"
	"github.com/aifirewall/aifirewall/processor/provider"
)

// replica is one pod of the chart's gateway mode: an Envoy and its sidecar,
// which drains that Envoy when it is told to stop.
type replica struct {
	sidecar *testenv.Sidecar
	envoy   *testenv.Envoy
	health  int // Envoy's /ready listener, the readiness probe's port
}

func startReplica(t *testing.T, redisURL, upstream string) *replica {
	t.Helper()
	admin := testinfra.FreePort(t)
	sc := testenv.StartSidecar(t, "INTERNAL_API_KEY="+testenv.ClientKey, "REDIS_URL="+redisURL,
		"UPSTREAM_BASE_URL="+upstream, "UPSTREAM_PROVIDER=openai",
		fmt.Sprintf("ENVOY_ADMIN_URL=http://127.0.0.1:%d", admin),
		"SHUTDOWN_MIN_DRAIN=2s", "SHUTDOWN_TIMEOUT=20s")
	port, health := testinfra.FreePort(t), testinfra.FreePort(t)
	o := envoy.Options{UpstreamURL: upstream, ExtProcAddr: sc.GRPCAddr, UpstreamKind: provider.OpenAI,
		UpstreamKeyEnv: "UPSTREAM_API_KEY", SecretDir: t.TempDir(), MaxBodyBytes: 1 << 20,
		ListenAddr: fmt.Sprintf("127.0.0.1:%d", port), AdminAddr: fmt.Sprintf("127.0.0.1:%d", admin),
		HealthAddr: fmt.Sprintf("127.0.0.1:%d", health)}
	testenv.WriteSecretFiles(t, o)
	cfg, err := envoy.YAML(o)
	if err != nil {
		t.Fatal(err)
	}
	e := testenv.StartEnvoyConfig(t, cfg, port, admin, "UPSTREAM_API_KEY="+testenv.UpstreamKey)
	return &replica{sidecar: sc, envoy: e, health: health}
}

// balancer is the Service in front of the replicas: an Envoy that sends
// each request to a replica whose readiness (Envoy's /ready) passes.
func balancer(t *testing.T, rs ...*replica) *testenv.Envoy {
	t.Helper()
	port, admin := testinfra.FreePort(t), testinfra.FreePort(t)
	var eps strings.Builder
	for _, r := range rs {
		fmt.Fprintf(&eps, `
          - endpoint:
              address: {socket_address: {address: 127.0.0.1, port_value: %d}}
              health_check_config: {port_value: %d}`, r.envoy.Port, r.health)
	}
	cfg := fmt.Sprintf(`
admin: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}
static_resources:
  listeners:
  - name: service
    address: {socket_address: {address: 127.0.0.1, port_value: %d}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: service
          route_config:
            virtual_hosts:
            - {name: all, domains: ["*"], routes: [{match: {prefix: "/"}, route: {cluster: replicas, timeout: 0s}}]}
          http_filters:
          - {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
  clusters:
  - name: replicas
    connect_timeout: 1s
    common_lb_config: {healthy_panic_threshold: {value: 0}}
    health_checks:
    - {timeout: 0.5s, interval: 0.25s, no_traffic_interval: 0.25s, unhealthy_threshold: 1, healthy_threshold: 1, http_health_check: {path: /ready}}
    load_assignment:
      cluster_name: replicas
      endpoints:
      - lb_endpoints:%s
`, admin, port, eps.String())
	return testenv.StartEnvoyConfig(t, []byte(cfg), port, admin)
}

// A rolling update under load: one of two replicas is stopped the way the
// kubelet stops a pod (SIGTERM to the sidecar while Envoy's preStop holds
// it; SIGKILL at the grace period) while clients stream through the
// Service. The sidecar drains its Envoy, which tells its clients to
// reconnect elsewhere, answers it until its last stream is done, then ends
// it. No request fails, every stream completes, each is billed once.
func TestRollingUpdateFailsNoRequest(t *testing.T) {
	rdb := testinfra.StartRedis(t)
	client := redis.NewClient(&redis.Options{Addr: rdb.Addr()})
	t.Cleanup(func() { client.Close() })
	up := httptest.NewServer(&fakellm.Server{NoRecord: true})
	t.Cleanup(up.Close)
	a, b := startReplica(t, rdb.URL(), up.URL), startReplica(t, rdb.URL(), up.URL)
	lb := balancer(t, a, b)

	const clients = 8
	var stop atomic.Bool
	var failed atomic.Int64
	done := make([]int64, clients)
	var failures sync.Map
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				if err := streamOnce(lb.URL(), fmt.Sprintf("roll-%d", i), "80"); err != nil {
					failed.Add(1)
					failures.Store(time.Now().Format("15:04:05.000"), err.Error())
					continue
				}
				done[i]++
			}
		}()
	}
	time.Sleep(3 * time.Second)
	// The kubelet: preStop hooks (Envoy's sleeps; the sidecar has none),
	// SIGTERM to the sidecar, SIGKILL to whatever is left at the grace
	// period (here 25 s).
	stopped := time.Now()
	if err := a.sidecar.Terminate(25 * time.Second); err != nil {
		t.Errorf("sidecar: %v\n%s", err, a.sidecar.Log())
	}
	if !a.envoy.Exited(25*time.Second - time.Since(stopped)) {
		t.Errorf("the drained Envoy was not ended by its sidecar within the grace period")
		_ = syscall.Kill(a.envoy.PID(), syscall.SIGKILL)
	}
	t.Logf("replica stopped in %s", time.Since(stopped).Round(time.Millisecond))
	time.Sleep(2 * time.Second) // load on the replica left
	stop.Store(true)
	wg.Wait()

	var total int64
	for _, n := range done {
		total += n
	}
	failures.Range(func(k, v any) bool { t.Errorf("%s: %s", k, v); return true })
	if failed.Load() > 0 || total == 0 {
		t.Fatalf("%d requests failed, %d completed", failed.Load(), total)
	}
	if !strings.Contains(a.sidecar.Log(), "envoy drained and told to exit") {
		t.Errorf("the sidecar did not drain its Envoy:\n%s", testinfra.Tail(a.sidecar.Log(), 20))
	}
	for i, n := range done {
		testenv.WaitSpent(t, client, today(fmt.Sprintf("roll-%d", i)), n*(11*miniIn+12*miniOut))
	}
	t.Logf("%d streams completed across the rolling update, 0 failed", total)
}

// streamOnce streams one answer of 12 chunks delayMS apart and checks it
// arrived whole; a refusal's error says its status and Retry-After.
func streamOnce(base, user, delayMS string) error {
	req, _ := http.NewRequest("POST", base+"/v1/chat/completions", strings.NewReader(seedBody))
	req.Header.Set("authorization", "Bearer "+testenv.ClientKey)
	req.Header.Set("content-type", "application/json")
	req.Header.Set("x-user-id", user)
	req.Header.Set("x-fake-words", "12")
	req.Header.Set("x-fake-delay-ms", delayMS)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("status %d (retry-after %q): %s", resp.StatusCode, resp.Header.Get("retry-after"), b)
	}
	var chunks int
	var last string
	s := bufio.NewScanner(resp.Body)
	for s.Scan() {
		if line := s.Text(); strings.HasPrefix(line, "data: ") {
			chunks++
			last = line
		}
	}
	if err := s.Err(); err != nil || last != "data: [DONE]" {
		return fmt.Errorf("stream cut after %d events (%v)", chunks, err)
	}
	return nil
}
