// Command pause holds a pod's namespaces for the live test cluster, as
// Kubernetes' pause image does: it waits for a signal to end and reaps
// nothing else. No image is pulled there, so the cluster builds its own.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
}
