// vcsim: the govmomi vCenter simulator as a small command for the portal's lab.
//
// Debian ships govmomi's simulator package but no vcsim command; this main builds one offline. It serves the
// vSphere SOAP API over HTTPS (a self-signed certificate) on the -listen address, prints "vcsim ready URL" once
// it answers, and stops on SIGTERM or SIGINT.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/vmware/govmomi/simulator"
)

func parseMethodDelays(spec string) (map[string]int, error) {
	delays := map[string]int{}
	for _, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		parts := strings.SplitN(item, "=", 2)
		if len(parts) != 2 {
			return nil, fmt.Errorf("-method-delay: %q is not METHOD=MILLISECONDS", item)
		}
		ms, err := strconv.Atoi(parts[1])
		if err != nil || ms < 0 {
			return nil, fmt.Errorf("-method-delay: %q is not a number of milliseconds", parts[1])
		}
		delays[parts[0]] = ms
	}
	return delays, nil
}

func main() {
	listen := flag.String("listen", "127.0.0.1:8989", "address to serve on (host:port)")
	datacenters := flag.Int("dc", 1, "number of datacenters")
	clusters := flag.Int("cluster", 1, "number of clusters per datacenter")
	clusterHosts := flag.Int("host", 3, "number of hosts per cluster")
	standaloneHosts := flag.Int("standalone-host", 1, "number of standalone hosts per datacenter")
	machines := flag.Int("vm", 2, "number of VMs per resource pool and per standalone host")
	pools := flag.Int("pool", 0, "number of child resource pools per cluster")
	datastores := flag.Int("ds", 1, "number of datastores")
	portgroups := flag.Int("pg", 1, "number of distributed port groups per datacenter")
	username := flag.String("username", "", "accept only this user name (with -password); empty: accept any login")
	password := flag.String("password", "", "accept only this password (with -username)")
	delay := flag.Int("delay", 0, "milliseconds to delay every SOAP call")
	methodDelay := flag.String("method-delay", "", "per-method delays, e.g. CloneVM_Task=500,PowerOnVM_Task=200")
	flag.Parse()

	if (*username == "") != (*password == "") {
		fmt.Fprintln(os.Stderr, "vcsim: give both -username and -password, or neither")
		os.Exit(2)
	}
	delays, err := parseMethodDelays(*methodDelay)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vcsim:", err)
		os.Exit(2)
	}

	model := simulator.VPX()
	model.Datacenter = *datacenters
	model.Cluster = *clusters
	model.ClusterHost = *clusterHosts
	model.Host = *standaloneHosts
	model.Machine = *machines
	model.Pool = *pools
	model.Datastore = *datastores
	model.Portgroup = *portgroups
	// Create applies the delays only once the inventory is built.
	model.DelayConfig = simulator.DelayConfig{Delay: *delay, MethodDelay: delays}
	if err := model.Create(); err != nil {
		fmt.Fprintln(os.Stderr, "vcsim: creating the inventory failed:", err)
		os.Exit(1)
	}
	defer model.Remove()

	model.Service.TLS = new(tls.Config)
	model.Service.Listen = &url.URL{Host: *listen}
	if *username != "" {
		model.Service.Listen.User = url.UserPassword(*username, *password)
	}
	server := model.Service.NewServer()
	defer server.Close()

	count := model.Count()
	fmt.Printf("vcsim ready %s (%d VMs, %d hosts, %d clusters)\n",
		server.URL.Scheme+"://"+server.URL.Host+server.URL.Path, count.Machine, count.Host, count.Cluster)

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
