package envoy

import (
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	overloadv3 "github.com/envoyproxy/go-control-plane/envoy/config/overload/v3"
	connsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/downstream_connections/v3"
	heapv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/fixed_heap/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Limits bound what one Envoy holds open. LLM streams are long and mostly
// idle: they cost no CPU, so Envoy's per-cluster defaults (1,024 requests,
// pending requests and connections) are what stops the 1,025th, with 503s
// no CPU-based autoscaler sees coming.
type Limits struct {
	// MaxStreams bounds each provider cluster's requests and connections
	// (HTTP/1.1 takes one per stream), with an eighth more waiting for a
	// connection; the sidecar's cluster gets twice as many.
	MaxStreams uint32
	// MaxDownstreamConnections bounds client connections (overload manager);
	// beyond it Envoy stops accepting until one closes.
	MaxDownstreamConnections uint64
	// MaxHeapBytes, when set, makes Envoy shrink its heap at 95 % of it and
	// refuse new requests at 98 %, instead of being killed for memory.
	MaxHeapBytes uint64
}

// Defaults: an Envoy on a host that lets a process open 20,000 files (two
// per HTTP/1.1 stream: the client's and the provider's) holds about this.
const (
	DefaultMaxStreams               = 10000
	DefaultMaxDownstreamConnections = 10000
)

func (l Limits) withDefaults() Limits {
	if l.MaxStreams == 0 {
		l.MaxStreams = DefaultMaxStreams
	}
	if l.MaxDownstreamConnections == 0 {
		l.MaxDownstreamConnections = DefaultMaxDownstreamConnections
	}
	return l
}

// circuitBreakers lets n streams run. With HTTP/1.1 to a provider, a
// request that finds every connection busy waits for one ("pending"): an
// eighth of n more (at least 16, for bursts of new connections) may wait,
// and past them Envoy answers 503 at once rather than queue requests behind
// streams that last minutes.
func circuitBreakers(n uint32) *clusterv3.CircuitBreakers {
	return &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		Priority:           corev3.RoutingPriority_DEFAULT,
		MaxConnections:     wrapperspb.UInt32(n),
		MaxPendingRequests: wrapperspb.UInt32(pending(n)),
		MaxRequests:        wrapperspb.UInt32(n),
		MaxRetries:         wrapperspb.UInt32(n),
	}}}
}

func pending(n uint32) uint32 { return min(max(n/8, 16), n) }

func overloadManager(l Limits) (*overloadv3.OverloadManager, error) {
	conns, err := anypb.New(&connsv3.DownstreamConnectionsConfig{MaxActiveDownstreamConnections: int64(l.MaxDownstreamConnections)})
	if err != nil {
		return nil, err
	}
	m := &overloadv3.OverloadManager{
		RefreshInterval: durationpb.New(250 * time.Millisecond),
		ResourceMonitors: []*overloadv3.ResourceMonitor{{Name: "envoy.resource_monitors.global_downstream_max_connections",
			ConfigType: &overloadv3.ResourceMonitor_TypedConfig{TypedConfig: conns}}},
	}
	if l.MaxHeapBytes == 0 {
		return m, nil
	}
	heap, err := anypb.New(&heapv3.FixedHeapConfig{MaxHeapSizeBytes: l.MaxHeapBytes})
	if err != nil {
		return nil, err
	}
	const heapMonitor = "envoy.resource_monitors.fixed_heap"
	m.ResourceMonitors = append(m.ResourceMonitors, &overloadv3.ResourceMonitor{Name: heapMonitor,
		ConfigType: &overloadv3.ResourceMonitor_TypedConfig{TypedConfig: heap}})
	at := func(v float64) []*overloadv3.Trigger {
		return []*overloadv3.Trigger{{Name: heapMonitor, TriggerOneof: &overloadv3.Trigger_Threshold{
			Threshold: &overloadv3.ThresholdTrigger{Value: v}}}}
	}
	m.Actions = []*overloadv3.OverloadAction{
		{Name: "envoy.overload_actions.shrink_heap", Triggers: at(0.95)},
		{Name: "envoy.overload_actions.stop_accepting_requests", Triggers: at(0.98)},
	}
	return m, nil
}

// applyLimits puts l on every cluster and on the bootstrap. The sidecar's
// cluster gets twice the providers' limit: a request past the limit then
// trips the provider's breaker, which Envoy flags (UO) and answers as the
// gateway being at capacity, rather than the firewall's, which would read
// as the firewall being down.
func applyLimits(b *bootstrapv3.Bootstrap, l Limits) error {
	l = l.withDefaults()
	for _, c := range b.GetStaticResources().GetClusters() {
		n := uint64(l.MaxStreams)
		if c.GetName() == extProcCluster {
			n = min(2*n, 1<<31)
		}
		c.CircuitBreakers = circuitBreakers(uint32(n))
	}
	m, err := overloadManager(l)
	if err != nil {
		return err
	}
	b.OverloadManager = m
	return nil
}
