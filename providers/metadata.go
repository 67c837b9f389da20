package providers

// The gRPC metadata Envoy sends the sidecar on each ext_proc stream, set per
// route by the generated configuration: which provider the route forwards
// to, and the path prefix it matched (absent for routes chosen by host).
// Clients cannot set gRPC metadata on Envoy's stream to the sidecar, so
// neither can choose a provider or its credential.
const (
	MetadataProvider   = "x-aifirewall-provider"
	MetadataPathPrefix = "x-aifirewall-path-prefix"
)

// ShorthandName names the one provider of UPSTREAM_BASE_URL.
const ShorthandName = "default"
