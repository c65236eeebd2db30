// Command etcd is the etcd 3.6 server, built from its Go module because Debian's
// etcd is too old for current kube-apiservers.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
