// Command coredns is the cluster DNS of the single-node test cluster: CoreDNS
// with only the plugins its Corefile uses (the cluster zone from the
// Kubernetes API; nothing is forwarded off the machine).
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/template"
)

func init() {
	// The order in which the plugins see a query (CoreDNS's own order for these).
	dnsserver.Directives = []string{"bind", "errors", "log", "health", "ready", "cache", "template", "kubernetes"}
}

func main() { coremain.Run() }
