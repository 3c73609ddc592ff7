// Package simnodes makes simulated peer Nodes: Node objects as a kubelet
// and flanneld would leave them (a podCIDR, flannel's vxlan annotations, a
// kubelet-like status of about 6 KB) with no host behind them. Node i has
// the podCIDR 10.(128+i/256).(i%256).0/24, inside 10.128.0.0/9, and the
// public IP 172.19.(i/250).(i%250+1), an address no namespace of
// internal/testenv holds (it is on none of the underlay's subnets), so
// that what a node sends it goes nowhere. The scale benchmark and the
// chaos suite use them.
package simnodes

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Network is a cluster network (net-conf.json's Network) that holds every
// simulated Node's podCIDR and flannel's default, 10.244.0.0/16, where
// tests put their real nodes: the first 29,696 simulated Nodes stay clear
// of it.
const Network = "10.128.0.0/9"

// Max is the number of distinct simulated Nodes: beyond it podCIDRs and
// public IPs would repeat.
const Max = 30000

// Options says what kind of peer to make.
type Options struct {
	// Dual adds an IPv6 podCIDR and flannel's IPv6 annotations.
	Dual bool
}

// Name is the name of simulated Node i.
func Name(i int) string { return fmt.Sprintf("sim-%05d", i) }

// PublicIP is simulated Node i's public IP.
func PublicIP(i int) net.IP { return net.IPv4(172, 19, byte(i/250), byte(i%250+1)) }

// MAC is simulated Node i's VTEP MAC (IPv4).
func MAC(i int) net.HardwareAddr {
	return net.HardwareAddr{0x0a, 0, 0, byte(i >> 16), byte(i >> 8), byte(i)}
}

// PodCIDR is simulated Node i's (IPv4) podCIDR.
func PodCIDR(i int) string { return fmt.Sprintf("10.%d.%d.0/24", 128+i/256, i%256) }

// Node returns simulated Node i.
func Node(i int, o Options) *v1.Node {
	ip := PublicIP(i).String()
	n := &v1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: Name(i),
			Labels: map[string]string{
				"kubernetes.io/hostname": Name(i), "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
				"node.kubernetes.io/instance-type": "m5.large", "topology.kubernetes.io/zone": "zone-" + strconv.Itoa(i%3),
			},
			Annotations: map[string]string{
				"flannel.alpha.coreos.com/backend-type":                  "vxlan",
				"flannel.alpha.coreos.com/backend-data":                  fmt.Sprintf(`{"VNI":1,"VtepMAC":"%s"}`, MAC(i)),
				"flannel.alpha.coreos.com/kube-subnet-manager":           "true",
				"flannel.alpha.coreos.com/public-ip":                     ip,
				"node.alpha.kubernetes.io/ttl":                           "0",
				"volumes.kubernetes.io/controller-managed-attach-detach": "true",
			},
		},
		Spec: v1.NodeSpec{PodCIDR: PodCIDR(i)},
	}
	if o.Dual {
		a := n.Annotations
		a["flannel.alpha.coreos.com/backend-v6-data"] = fmt.Sprintf(`{"VNI":1,"VtepMAC":"0a:00:06:%02x:%02x:%02x"}`, (i>>16)&0xff, (i>>8)&0xff, i&0xff)
		a["flannel.alpha.coreos.com/public-ipv6"] = fmt.Sprintf("fc00:f853:ccd:e794::%x", i+1)
		v6 := netip.AddrFrom16([16]byte{0xfd, 0, 0, 0x10, 0, 0, byte(i >> 8), byte(i)})
		n.Spec.PodCIDRs = []string{n.Spec.PodCIDR, netip.PrefixFrom(v6, 64).String()}
	}
	st := &n.Status
	res := v1.ResourceList{
		v1.ResourceCPU: resource.MustParse("2"), v1.ResourceMemory: resource.MustParse("8Gi"),
		v1.ResourcePods: resource.MustParse("110"), v1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
	}
	st.Capacity, st.Allocatable = res, res
	now := metav1.Now()
	for _, c := range []v1.NodeConditionType{v1.NodeMemoryPressure, v1.NodeDiskPressure, v1.NodePIDPressure, v1.NodeReady} {
		status := v1.ConditionFalse
		if c == v1.NodeReady {
			status = v1.ConditionTrue
		}
		st.Conditions = append(st.Conditions, v1.NodeCondition{Type: c, Status: status, Reason: "Kubelet" + string(c),
			Message: "kubelet has sufficient resources and is posting ready status", LastHeartbeatTime: now, LastTransitionTime: now})
	}
	st.Addresses = []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: ip}, {Type: v1.NodeHostName, Address: Name(i)}}
	if o.Dual {
		st.Addresses = append(st.Addresses, v1.NodeAddress{Type: v1.NodeInternalIP, Address: n.Annotations["flannel.alpha.coreos.com/public-ipv6"]})
	}
	st.NodeInfo = v1.NodeSystemInfo{
		MachineID: fmt.Sprintf("%032x", i), SystemUUID: fmt.Sprintf("ec2%029x", i), BootID: fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i),
		KernelVersion: "6.1.0-27-cloud-amd64", OSImage: "Debian GNU/Linux 12 (bookworm)", ContainerRuntimeVersion: "containerd://1.7.24",
		KubeletVersion: "v1.37.2", OperatingSystem: "linux", Architecture: "amd64",
	}
	for j := 0; j < 30; j++ {
		st.Images = append(st.Images, v1.ContainerImage{
			Names: []string{
				fmt.Sprintf("registry.example.com/team-%02d/service-%02d@sha256:%064x", j%7, j, j*7919+i),
				fmt.Sprintf("registry.example.com/team-%02d/service-%02d:v1.%d.%d", j%7, j, j, i%10),
			},
			SizeBytes: int64(20_000_000 + j*1_000_000),
		})
	}
	return n
}

// Create creates simulated Nodes [from, to) with 16 workers.
func Create(ctx context.Context, c kubernetes.Interface, from, to int, o Options) error {
	if from < 0 || to > Max {
		return fmt.Errorf("simulated Nodes [%d, %d): outside [0, %d)", from, to, Max)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	jobs := make(chan int)
	errs := make(chan error, 16)
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				if _, err := c.CoreV1().Nodes().Create(ctx, Node(i, o), metav1.CreateOptions{}); err != nil {
					errs <- fmt.Errorf("creating %s: %w", Name(i), err)
					cancel() // the others stop too
					return
				}
			}
		}()
	}
	go func() {
		defer close(jobs)
		for i := from; i < to; i++ {
			select {
			case jobs <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	return ctx.Err()
}
