//go:build deploy

package deploytest

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"

	"github.com/aifirewall/aifirewall/internal/testinfra"
)

// start runs cmd (made with a context that cancel ends) with its output
// kept; at cleanup it ends it and, when the test failed, shows the tail.
func start(t *testing.T, name string, cmd *exec.Cmd, cancel context.CancelFunc) *testinfra.LogBuffer {
	t.Helper()
	log := &testinfra.LogBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
		if t.Failed() {
			t.Logf("%s (tail):\n%s", name, testinfra.Tail(log.String(), 60))
		}
	})
	return log
}

// chatText reads an OpenAI chat completion stream: the text of its deltas,
// and whether any chunk carried usage.
func chatText(r io.Reader) (text string, usage bool) {
	var b strings.Builder
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok || line == "[DONE]" {
			continue
		}
		var chunk struct {
			Choices []struct {
				Delta struct{ Content string } `json:"delta"`
			} `json:"choices"`
			Usage any `json:"usage"`
		}
		json.Unmarshal([]byte(line), &chunk)
		usage = usage || chunk.Usage != nil
		for _, c := range chunk.Choices {
			b.WriteString(c.Delta.Content)
		}
	}
	return b.String(), usage
}
