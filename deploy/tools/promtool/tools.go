//go:build tools

// Package tools pins promtool for `make test-deploy`: it checks the
// chart's PrometheusRule (promtool check rules) and unit-tests its alerts
// (promtool test rules).
package tools

import _ "github.com/prometheus/prometheus/cmd/promtool"
