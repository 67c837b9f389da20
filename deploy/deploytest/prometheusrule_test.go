//go:build deploy

package deploytest

import (
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
