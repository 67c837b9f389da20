package dashboard

import (
	"cmp"
	"slices"
	"time"

	"github.com/aifirewall/aifirewall/billing"
	"github.com/aifirewall/aifirewall/ledger"
)

// The chart's geometry, in SVG user units.
const (
	chartW, chartH      = 960.0, 300.0
	plotLeft, plotRight = 80.0, 12.0
	plotTop, plotBottom = 12.0, 36.0
	maxSeries           = 7 // the rest are drawn as one "other"
	yTicks              = 4
)

// palette is told apart by people with the common colour blindnesses
// (Okabe and Ito's), and grey for "other".
var palette = []string{"#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999999"}

// chart is spend per day, stacked by series (model, group, ...).
type chart struct {
	W, H   float64
	Bars   []chartBar
	Labels []label // days, under the bars
	Ticks  []label // amounts, left of the plot
	Grid   []float64
	Legend []series
	Total  billing.Nanos
	Left   float64 // where the plot starts
	Right  float64
}

type chartBar struct {
	X, Y, W, H  float64
	Day, Series string
	Cost        billing.Nanos
	Color       string
}

type label struct {
	X, Y float64
	Text string
}

type series struct {
	Name  string
	Cost  billing.Nanos
	Color string
}

// newChart draws rows (by day, split by a series) over the days from start.
func newChart(rows []ledger.Row, start time.Time, days int) chart {
	c := chart{W: chartW, H: chartH, Left: plotLeft, Right: chartW - plotRight}
	dayIndex := map[string]int{}
	for i := range days {
		dayIndex[start.AddDate(0, 0, i).Format(time.DateOnly)] = i
	}
	rows = slices.DeleteFunc(slices.Clone(rows), func(r ledger.Row) bool { _, in := dayIndex[r.Key]; return !in })
	bySeries := map[string]billing.Nanos{}
	for _, r := range rows {
		bySeries[r.Split] += billing.Nanos(r.CostNanos)
		c.Total += billing.Nanos(r.CostNanos)
	}
	for name, cost := range bySeries {
		c.Legend = append(c.Legend, series{Name: name, Cost: cost})
	}
	slices.SortFunc(c.Legend, func(a, b series) int { return cmp.Or(cmp.Compare(b.Cost, a.Cost), cmp.Compare(a.Name, b.Name)) })
	shown := map[string]int{}
	if len(c.Legend) > maxSeries+1 {
		var other billing.Nanos
		for _, s := range c.Legend[maxSeries:] {
			other += s.Cost
		}
		c.Legend = append(c.Legend[:maxSeries], series{Name: "other", Cost: other})
	}
	for i := range c.Legend {
		c.Legend[i].Color = palette[min(i, len(palette)-1)]
		shown[c.Legend[i].Name] = i
	}

	// Each day's stack, in legend order.
	stacks := make([][]billing.Nanos, days)
	for i := range stacks {
		stacks[i] = make([]billing.Nanos, len(c.Legend))
	}
	for _, r := range rows {
		d := dayIndex[r.Key]
		s, ok := shown[r.Split]
		if !ok {
			s = len(c.Legend) - 1 // other
		}
		stacks[d][s] += billing.Nanos(r.CostNanos)
	}
	var top billing.Nanos
	for _, st := range stacks {
		var sum billing.Nanos
		for _, v := range st {
			sum += v
		}
		top = max(top, sum)
	}
	step := niceStep(top / yTicks)
	ymax := step * yTicks

	plotH, plotW := chartH-plotTop-plotBottom, chartW-plotLeft-plotRight
	slot := plotW / float64(days)
	for i := 0; i <= yTicks; i++ {
		y := plotTop + plotH - plotH*float64(i)/yTicks
		c.Grid = append(c.Grid, y)
		c.Ticks = append(c.Ticks, label{X: plotLeft - 8, Y: y + 4, Text: usd(step * billing.Nanos(i))})
	}
	every := max(1, days/10) // at most about ten day labels
	for d, st := range stacks {
		x := plotLeft + slot*float64(d) + slot*0.15
		if d%every == 0 || d == days-1 {
			c.Labels = append(c.Labels, label{X: x + slot*0.35, Y: chartH - plotBottom + 18, Text: start.AddDate(0, 0, d).Format("Jan 2")})
		}
		base := plotTop + plotH
		for s, v := range st {
			if v <= 0 {
				continue
			}
			h := plotH * float64(v) / float64(ymax)
			base -= h
			c.Bars = append(c.Bars, chartBar{X: x, Y: base, W: slot * 0.7, H: h, Day: start.AddDate(0, 0, d).Format(time.DateOnly),
				Series: c.Legend[s].Name, Cost: v, Color: c.Legend[s].Color})
		}
	}
	return c
}

// niceStep is the least of 1, 2 and 5 times a power of ten, in cents or
// more, that is at least n.
func niceStep(n billing.Nanos) billing.Nanos {
	for p := billing.NanosPerUSD / 100; ; p *= 10 {
		for _, m := range []billing.Nanos{1, 2, 5} {
			if m*p >= n {
				return m * p
			}
		}
		if p > billing.MaxNanos/100 {
			return p
		}
	}
}
