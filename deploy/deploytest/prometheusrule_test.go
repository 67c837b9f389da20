//go:build deploy

package deploytest

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/yaml"

	"github.com/aifirewall/aifirewall/processor"
)

// The chart's PrometheusRule, for the budgets of testdata/budgets-values.yaml:
// promtool accepts its rules, and its unit test (testdata/budget-alerts-test.yaml)
// shows the warnings fire at each threshold and the exhaustion alert at
// the limit, taking the highest sidecar's figure; every metric the rules
// query is one the sidecar exports.
func TestChartPrometheusRule(t *testing.T) {
	promtool := tool(t, "promtool")
	docs := render(t, "testdata/budgets-values.yaml", append([]string{"prometheusRule.enabled=true"}, base...)...)
	rule := find(t, docs, "PrometheusRule")
	out, err := yaml.Marshal(map[string]any{"groups": get(rule, "spec", "groups")})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "rules.yaml"), out, 0o600)
	test, err := os.ReadFile("testdata/budget-alerts-test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "test.yaml"), test, 0o600)
	for _, args := range [][]string{{"check", "rules", "rules.yaml"}, {"test", "rules", "test.yaml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("promtool %s: %v\n%s\nrules:\n%s", strings.Join(args, " "), err, b, out)
		}
	}

	exported := map[string]bool{}
	processor.NewMetrics(recorder(exported), false)
	for _, m := range regexp.MustCompile(`\b(aifirewall_[a-z_]+)`).FindAllStringSubmatch(string(out), -1) {
		if !exported[m[1]] {
			t.Errorf("the rules query %s, which the sidecar does not export", m[1])
		}
	}
}

// recorder registers nothing and notes the names of what would be.
type recorder map[string]bool

func (r recorder) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 64)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		if m := regexp.MustCompile(`fqName: "([^"]+)"`).FindStringSubmatch(d.String()); m != nil {
			r[m[1]] = true
		}
	}
	return nil
}

func (r recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		r.Register(c)
	}
}

func (r recorder) Unregister(prometheus.Collector) bool { return true }

// The chart's Grafana dashboard: well-formed JSON Grafana's sidecar loads
// (a labelled ConfigMap), panels that do not overlap, every query valid
// PromQL (promtool checks each as a recording rule; Grafana's
// dashboard-linter is not served by the module proxy here) and naming
// only metrics the sidecar exports.
func TestChartGrafanaDashboard(t *testing.T) {
	promtool := tool(t, "promtool")
	docs := render(t, "", append([]string{"grafanaDashboard.enabled=true"}, base...)...)
	var cm doc
	for _, d := range docs {
		if d["kind"] == "ConfigMap" && strings.HasSuffix(get(d, "metadata", "name").(string), "-dashboard") {
			cm = d
		}
	}
	if cm == nil || get(cm, "metadata", "labels", "grafana_dashboard") != "1" {
		t.Fatalf("no dashboard ConfigMap labelled for Grafana's sidecar: %v", cm)
	}
	var dash struct {
		UID    string `json:"uid"`
		Panels []struct {
			ID      int                      `json:"id"`
			Title   string                   `json:"title"`
			GridPos struct{ X, Y, W, H int } `json:"gridPos"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal([]byte(get(cm, "data", "aifirewall.json").(string)), &dash); err != nil || dash.UID == "" || len(dash.Panels) == 0 {
		t.Fatalf("dashboard JSON: %v", err)
	}
	exported := map[string]bool{}
	processor.NewMetrics(recorder(exported), false)
	var rules []any
	cells := map[[2]int]string{}
	for _, p := range dash.Panels {
		for x := p.GridPos.X; x < p.GridPos.X+p.GridPos.W; x++ {
			for y := p.GridPos.Y; y < p.GridPos.Y+p.GridPos.H; y++ {
				if other, ok := cells[[2]int{x, y}]; ok {
					t.Fatalf("panels %q and %q overlap", other, p.Title)
				}
				cells[[2]int{x, y}] = p.Title
			}
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for i, q := range p.Targets {
			rules = append(rules, map[string]any{"record": fmt.Sprintf("dashboard:panel_%d_%d", p.ID, i), "expr": q.Expr})
			// Metric names, not the label names of by (...) and {...}.
			bare := regexp.MustCompile(`\b(by|without)\s*\([^)]*\)|\{[^}]*\}`).ReplaceAllString(q.Expr, "")
			for _, m := range regexp.MustCompile(`\b((?:aifirewall|gen_ai)_[a-z_]+)`).FindAllStringSubmatch(bare, -1) {
				name := m[1]
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if base, ok := strings.CutSuffix(name, suffix); ok && exported[base] {
						name = base
					}
				}
				if !exported[name] {
					t.Errorf("panel %q queries %s, which the sidecar does not export", p.Title, m[1])
				}
			}
		}
	}
	out, _ := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	file := filepath.Join(t.TempDir(), "queries.yaml")
	os.WriteFile(file, out, 0o600)
	if b, err := exec.Command(promtool, "check", "rules", file).CombinedOutput(); err != nil {
		t.Fatalf("promtool rejects a dashboard query: %v\n%s", err, b)
	}
}
