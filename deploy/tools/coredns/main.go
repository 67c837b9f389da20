// Command coredns is CoreDNS with only the plugins the live test cluster
// serves its DNS with (deploy/cluster): Service and Pod names from the
// kubernetes plugin, nothing forwarded anywhere. The full plugin set pulls
// in every cloud provider's SDK for nothing.
package main

import (
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"

	"github.com/coredns/coredns/coremain"
)

func main() { coremain.Run() }
