// Command flannel is the CNI plugin the container runtime calls for every
// pod: it hands the node's subnet from flanneld's subnet.env to the standard
// bridge and host-local plugins.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"

	"github.com/twill-net/twill/cniplugin"
	"github.com/twill-net/twill/version"
)

func main() {
	skel.PluginMainFuncs(cniplugin.New().Funcs(), cniplugin.SupportedVersions, "CNI plugin flannel (Twill) "+version.Version)
}
