// Package conformance is Kubernetes' own end-to-end suite
// (k8s.io/kubernetes/test/e2e, at the lab's Kubernetes version) built with
// its network tests only: hack/conformance-build.sh compiles it into
// e2e-network.test, which `twill lab conformance` runs against a lab. The
// full e2e.test carries every SIG's tests (storage, DRA, autoscaling…) and
// takes several times as long to build; the tests it runs here are the same
// code.
package conformance

import (
	"flag"
	"os"
	"testing"

	conformancetestdata "k8s.io/kubernetes/test/conformance/testdata"
	"k8s.io/kubernetes/test/e2e"
	"k8s.io/kubernetes/test/e2e/framework"
	"k8s.io/kubernetes/test/e2e/framework/config"
	"k8s.io/kubernetes/test/e2e/framework/testfiles"
	e2etestingmanifests "k8s.io/kubernetes/test/e2e/testing-manifests"
	testfixtures "k8s.io/kubernetes/test/fixtures"

	// The tests: SIG Network's, and the pod networking checks the common
	// suite holds.
	_ "k8s.io/kubernetes/test/e2e/common/network"
	_ "k8s.io/kubernetes/test/e2e/network"

	// What the e2e suite's own main registers.
	_ "k8s.io/kubernetes/test/e2e/feature"
	_ "k8s.io/kubernetes/test/e2e/framework/debug/init"
	_ "k8s.io/kubernetes/test/e2e/framework/metrics/init"
	_ "k8s.io/kubernetes/test/e2e/framework/node/init"
)

func TestMain(m *testing.M) {
	config.CopyFlags(config.Flags, flag.CommandLine)
	framework.RegisterCommonFlags(flag.CommandLine)
	framework.RegisterClusterFlags(flag.CommandLine)
	flag.Parse()
	testfiles.AddFileSource(e2etestingmanifests.GetE2ETestingManifestsFS())
	testfiles.AddFileSource(testfixtures.GetTestFixturesFS())
	testfiles.AddFileSource(conformancetestdata.GetConformanceTestdataFS())
	framework.AfterReadingAllFlags(&framework.TestContext)
	os.Exit(m.Run())
}

// TestNetworkE2E runs the ginkgo suite; --ginkgo.focus picks the tests.
func TestNetworkE2E(t *testing.T) {
	e2e.RunE2ETests(t)
}
