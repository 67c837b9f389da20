//go:build deploy

package deploytest

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/deploy/cluster"
	"github.com/aifirewall/aifirewall/internal/fakellm"
	"github.com/aifirewall/aifirewall/internal/testenv"
	"github.com/aifirewall/aifirewall/internal/testinfra"
)

const (
	clusterNS   = "aifw"
	internalKey = "sk-cluster-internal-key"
	providerKey = "sk-cluster-provider-key"
)

// The chart, installed the way a platform engineer installs it, in a real
// single-node cluster: pods of the images make image and the cluster
// build, Redis and a provider (fake, accepting only its key) on the node's
// address.
func TestLiveCluster(t *testing.T) {
	c := cluster.Start(t, cluster.Options{Tools: filepath.Dir(tool(t, "helm")), Envoy: testenv.EnvoyBinary(t), Version: chartAppVersion(t)})
	rdb := testinfra.StartRedisOn(t, cluster.NodeIP)
	client := redis.NewClient(&redis.Options{Addr: rdb.Addr()})
	t.Cleanup(func() { client.Close() })
	provider := &fakellm.Server{ExpectKey: providerKey}
	l, err := net.Listen("tcp", cluster.NodeIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: provider, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	create(t, c, "/api/v1/namespaces", fmt.Sprintf(`{"metadata":{"name":%q}}`, clusterNS))
	create(t, c, "/api/v1/namespaces/"+clusterNS+"/secrets", fmt.Sprintf(`{"metadata":{"name":"aifirewall"},"data":{"internal-api-key":%q,"openai-api-key":%q}}`,
		base64.StdEncoding.EncodeToString([]byte(internalKey)), base64.StdEncoding.EncodeToString([]byte(providerKey))))
	values := []string{
		"--set", "secret.name=aifirewall",
		"--set", "redis.url=" + rdb.URL(),
		"--set", "image.registry=aifirewall.test",
		"--set", "envoyImage.repository=" + strings.Split(cluster.EnvoyImage, ":")[0],
		"--set", "tests.image=" + cluster.ToolsImage,
		"--set-json", `secret.providerKeyEnv={"OPENAI_API_KEY":"openai-api-key"}`,
		"--set-json", providersValue(l.Addr().String(), ""),
	}

	t.Run("gateway", func(t *testing.T) {
		out := helmIn(t, c, append([]string{"install", "gw", chartDir(t), "--wait", "--timeout", "3m",
			"--set", "mode=gateway", "--set", "gateway.replicas=1"}, values...)...)
		t.Log(out)
		ip := serviceIP(t, c, "gw-aifirewall")
		usage := chat(t, "http://"+ip+":8000", "gateway-user")
		testenv.WaitSpent(t, client, budgetKey("gateway-user"), usage.cost(150, 600))

		if out, err := helmErr(t, c, "test", "gw", "-n", clusterNS, "--timeout", "3m"); err != nil {
			t.Fatalf("helm test: %v\n%s", err, out)
		}

		// A changed providers file rolls the pods (its checksum is on the
		// pod template), and the new pods bill at the new prices.
		before := podUIDs(t, c, "app.kubernetes.io/instance=gw")
		helmIn(t, c, append(append([]string{"upgrade", "gw", chartDir(t), "--wait", "--timeout", "3m",
			"--set", "mode=gateway", "--set", "gateway.replicas=1"}, values...),
			"--set-json", providersValue(l.Addr().String(), `"prices":{"gpt-4o-mini":{"input":"0.30","output":"1.20"}}`))...)
		after := podUIDs(t, c, "app.kubernetes.io/instance=gw")
		for uid := range after {
			if before[uid] {
				t.Fatalf("pod %s survived the upgrade: the changed configuration did not roll the pods", uid)
			}
		}
		// The old pods drain (and answer at the old prices) for a few
		// seconds more: what follows expects only the new ones.
		waitReplaced(t, c, "app.kubernetes.io/instance=gw", before)
		usage = chat(t, "http://"+ip+":8000", "gateway-user-2")
		testenv.WaitSpent(t, client, budgetKey("gateway-user-2"), usage.cost(300, 1200))

		rolloutUnderLoad(t, c, client, "http://"+ip+":8000")
	})

	t.Run("sidecar", func(t *testing.T) {
		// The example app's first act is a streamed chat completion
		// through its pod's own Envoy: it runs only once the native
		// sidecars are up.
		app, _ := json.Marshal([]string{"sh", "-c", fmt.Sprintf("curl -sS -N http://127.0.0.1:8000/v1/chat/completions -H 'authorization: Bearer %s' -H 'x-user-id: sidecar-app' -H 'content-type: application/json' -d '%s'; sleep 3600",
			internalKey, chatBody)})
		helmIn(t, c, append([]string{"install", "sc", chartDir(t), "--wait", "--timeout", "3m",
			"--set", "mode=sidecar", "--set", "sidecar.example.enabled=true",
			"--set", "sidecar.example.image=" + cluster.ToolsImage, "--set-json", "sidecar.example.command=" + string(app)}, values...)...)
		var log string
		for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(time.Second) {
			log = containerLog(t, c, "sc-aifirewall-example", "app")
			if strings.Contains(log, "[DONE]") || time.Now().After(deadline) {
				break
			}
		}
		usage := usageIn(t, log)
		testenv.WaitSpent(t, client, budgetKey("sidecar-app"), usage.cost(150, 600))
	})
}

// providersValue is the providers file with one OpenAI-format provider at
// addr, the key from the Secret, and extra fields for it.
func providersValue(addr, extra string) string {
	if extra != "" {
		extra = "," + extra
	}
	return fmt.Sprintf(`providers={"providers":[{"name":"openai","format":"openai","base_url":"http://%s","path_prefix":"/","api_key_env":"OPENAI_API_KEY"%s}]}`, addr, extra)
}

const chatBody = `{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Hello from the cluster!"}]}`

type usage struct{ Prompt, Completion int64 }

// cost is the bill in nano-dollars at in and out nano-dollars a token.
func (u usage) cost(in, out int64) int64 { return u.Prompt*in + u.Completion*out }

// rolloutUnderLoad restarts the gateway's pods (what kubectl rollout
// restart does) while clients that keep their connections alive stream
// through the Service: no request fails, each is billed once.
func rolloutUnderLoad(t *testing.T, c *cluster.Cluster, rdb *redis.Client, base string) {
	t.Helper()
	const clients = 6
	var stop atomic.Bool
	var wg sync.WaitGroup
	done := make([]int64, clients)
	var mu sync.Mutex
	var failures []string
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hc := &http.Client{Timeout: 60 * time.Second} // keeps its connection alive
			for !stop.Load() {
				if _, err := stream(hc, base, fmt.Sprintf("rollout-%d", i), map[string]string{"x-fake-words": "12", "x-fake-delay-ms": "80"}); err != nil {
					mu.Lock()
					failures = append(failures, time.Now().Format("15:04:05.000")+" "+err.Error())
					mu.Unlock()
					continue
				}
				done[i]++
			}
		}()
	}
	time.Sleep(2 * time.Second)
	before := podUIDs(t, c, "app.kubernetes.io/instance=gw")
	patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":%q}}}}}`, time.Now().Format(time.RFC3339))
	if st, body := c.Do(t, "PATCH", "/apis/apps/v1/namespaces/"+clusterNS+"/deployments/gw-aifirewall", patch); st != 200 {
		t.Fatalf("rollout restart: %d %s", st, body)
	}
	start := time.Now()
	waitReplaced(t, c, "app.kubernetes.io/instance=gw", before)
	t.Logf("rolled out in %s", time.Since(start).Round(time.Second))
	time.Sleep(2 * time.Second)
	stop.Store(true)
	wg.Wait()
	var total int64
	for _, n := range done {
		total += n
	}
	if len(failures) > 0 || total == 0 {
		t.Fatalf("%d requests failed during the rollout, %d completed:\n%s", len(failures), total, strings.Join(failures, "\n"))
	}
	for i, n := range done {
		testenv.WaitSpent(t, rdb, budgetKey(fmt.Sprintf("rollout-%d", i)), n*usage{11, 12}.cost(300, 1200))
	}
	t.Logf("%d streams through the rollout, 0 failed, each billed once", total)
}

// waitReplaced waits until every pod of selector is new (none of before
// is left, terminating or not) and ready.
func waitReplaced(t *testing.T, c *cluster.Cluster, selector string, before map[string]bool) {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(time.Second) {
		_, body := c.Do(t, "GET", "/api/v1/namespaces/"+clusterNS+"/pods?labelSelector="+selector, "")
		var list struct {
			Items []struct {
				Metadata struct {
					UID string `json:"uid"`
				} `json:"metadata"`
				Status struct {
					Conditions []struct{ Type, Status string } `json:"conditions"`
				} `json:"status"`
			} `json:"items"`
		}
		_ = json.Unmarshal([]byte(body), &list)
		replaced := len(list.Items) > 0
		for _, p := range list.Items {
			ready := false
			for _, cond := range p.Status.Conditions {
				ready = ready || cond.Type == "Ready" && cond.Status == "True"
			}
			replaced = replaced && !before[p.Metadata.UID] && ready
		}
		if replaced {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pods not replaced after 3 minutes: %s", testinfra.Tail(body, 20))
		}
	}
}

// chat sends a streamed chat completion as user and returns the usage the
// stream reported.
func chat(t *testing.T, base, user string) usage {
	t.Helper()
	var u usage
	var err error
	// The Service's rules reach kube-proxy's chains a moment after the
	// pods are ready. A new connection each time: one kept alive from
	// before an upgrade would reach an old pod while it drains.
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		if u, err = stream(hc, base, user, nil); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("chat completion through %s: %v", base, err)
	}
	return u
}

// stream sends a streamed chat completion as user, with the fake
// provider's steering headers, and returns the usage it reported.
func stream(hc *http.Client, base, user string, steer map[string]string) (usage, error) {
	req, _ := http.NewRequest("POST", base+"/v1/chat/completions", strings.NewReader(chatBody))
	req.Header.Set("authorization", "Bearer "+internalKey)
	req.Header.Set("x-user-id", user)
	req.Header.Set("content-type", "application/json")
	for k, v := range steer {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return usage{}, err
	}
	defer resp.Body.Close()
	var b strings.Builder
	s := bufio.NewScanner(resp.Body)
	for s.Scan() {
		b.WriteString(s.Text() + "\n")
	}
	if resp.StatusCode != 200 {
		return usage{}, fmt.Errorf("status %d: %s", resp.StatusCode, b.String())
	}
	if err := s.Err(); err != nil || !strings.Contains(b.String(), "data: [DONE]") {
		return usage{}, fmt.Errorf("stream cut (%v): %s", err, testinfra.Tail(b.String(), 3))
	}
	u, ok := findUsage(b.String())
	if !ok {
		return usage{}, fmt.Errorf("no usage in the stream: %s", testinfra.Tail(b.String(), 5))
	}
	return u, nil
}

// usageIn finds the usage event of an SSE stream (in a container log too).
func usageIn(t *testing.T, sse string) usage {
	t.Helper()
	u, ok := findUsage(sse)
	if !ok {
		t.Fatalf("no usage in the stream:\n%s", testinfra.Tail(sse, 20))
	}
	return u
}

func findUsage(sse string) (usage, bool) {
	for _, line := range strings.Split(sse, "\n") {
		_, data, ok := strings.Cut(line, "data: ")
		if !ok || !strings.Contains(data, `"usage"`) {
			continue
		}
		var ev struct {
			Usage *struct {
				Prompt     int64 `json:"prompt_tokens"`
				Completion int64 `json:"completion_tokens"`
			} `json:"usage"`
		}
		if json.Unmarshal([]byte(data), &ev) == nil && ev.Usage != nil && ev.Usage.Completion > 0 {
			return usage{ev.Usage.Prompt, ev.Usage.Completion}, true
		}
	}
	return usage{}, false
}

func budgetKey(user string) string { return billing.BudgetKey(user, billing.Day(time.Now(), time.UTC)) }

func create(t *testing.T, c *cluster.Cluster, path, body string) {
	t.Helper()
	if st, out := c.Do(t, "POST", path, body); st != 201 {
		t.Fatalf("POST %s: %d %s", path, st, out)
	}
}

// helmIn runs helm against the cluster in the test namespace.
func helmIn(t *testing.T, c *cluster.Cluster, args ...string) string {
	t.Helper()
	out, err := helmErr(t, c, append(args, "-n", clusterNS)...)
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", args[0], err, out)
	}
	return out
}

func helmErr(t *testing.T, c *cluster.Cluster, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(tool(t, "helm"), append(args, "--kubeconfig", c.Kubeconfig())...)
	home := filepath.Join(c.Dir(), "helm")
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home, "HELM_CONFIG_HOME="+home, "HELM_DATA_HOME="+home)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func serviceIP(t *testing.T, c *cluster.Cluster, name string) string {
	t.Helper()
	st, body := c.Do(t, "GET", "/api/v1/namespaces/"+clusterNS+"/services/"+name, "")
	var svc struct {
		Spec struct {
			ClusterIP string `json:"clusterIP"`
		} `json:"spec"`
	}
	if st != 200 || json.Unmarshal([]byte(body), &svc) != nil || svc.Spec.ClusterIP == "" {
		t.Fatalf("service %s: %d %s", name, st, body)
	}
	return svc.Spec.ClusterIP
}

// podUIDs are the running pods of a label selector.
func podUIDs(t *testing.T, c *cluster.Cluster, selector string) map[string]bool {
	t.Helper()
	_, body := c.Do(t, "GET", "/api/v1/namespaces/"+clusterNS+"/pods?labelSelector="+selector, "")
	var list struct {
		Items []struct {
			Metadata struct {
				UID               string  `json:"uid"`
				DeletionTimestamp *string `json:"deletionTimestamp"`
			} `json:"metadata"`
			Status struct {
				Phase string `json:"phase"`
			} `json:"status"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(body), &list); err != nil {
		t.Fatalf("pods: %v %s", err, body)
	}
	uids := map[string]bool{}
	for _, p := range list.Items {
		if p.Metadata.DeletionTimestamp == nil && p.Status.Phase == "Running" {
			uids[p.Metadata.UID] = true
		}
	}
	if len(uids) == 0 {
		t.Fatalf("no running pod for %s: %s", selector, testinfra.Tail(body, 20))
	}
	return uids
}

// containerLog is what a container of a Deployment's pod printed, read
// from the kubelet's log files (CRI format: time, stream, tag, text).
func containerLog(t *testing.T, c *cluster.Cluster, deployment, container string) string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(c.Dir(), "pod-logs", clusterNS+"_"+deployment+"-*", container, "*.log"))
	var b strings.Builder
	for _, f := range files {
		raw, _ := os.ReadFile(f)
		for _, line := range strings.Split(string(raw), "\n") {
			if parts := strings.SplitN(line, " ", 4); len(parts) == 4 {
				b.WriteString(parts[3])
				if parts[2] == "F" {
					b.WriteString("\n")
				}
			}
		}
	}
	return b.String()
}
