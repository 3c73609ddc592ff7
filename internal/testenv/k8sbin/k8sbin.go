// Package k8sbin finds the Kubernetes binaries built by hack/k8s-build.sh
// (`make k8s`) for the lab, the end-to-end suite and the benchmarks.
package k8sbin

import (
	"fmt"
	"os"
	"path/filepath"
)

// Version is the Kubernetes release the binaries are built from; it matches
// the client-go in go.mod and k8s.io/kubernetes in hack/tools/go.mod.
const Version = "v1.37.2"

// Commands are the binaries hack/k8s-build.sh builds.
var Commands = []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl"}

// CacheDir is the root of Twill's build cache: $TWILL_CACHE, else
// /var/cache/twill, the same rule hack/k8s-build.sh follows.
func CacheDir() string {
	if d := os.Getenv("TWILL_CACHE"); d != "" {
		return d
	}
	return "/var/cache/twill"
}

// Dir returns the directory holding the Kubernetes binaries, or an error
// saying how to build them when any is missing.
func Dir() (string, error) {
	dir := filepath.Join(CacheDir(), "k8s", Version, "bin")
	for _, c := range Commands {
		fi, err := os.Stat(filepath.Join(dir, c))
		if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return "", fmt.Errorf("kubernetes %s binary %s not found in %s: run `make k8s` (hack/k8s-build.sh) to build them", Version, c, dir)
		}
	}
	return dir, nil
}

// Path returns the path of one Kubernetes binary, e.g. Path("kubectl").
func Path(name string) (string, error) {
	dir, err := Dir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, name), nil
}
