package lab

import (
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"text/template"

	"github.com/twill-net/twill/family"
	"github.com/twill-net/twill/internal/testenv/proc"
	"github.com/twill-net/twill/lab/images"
)

// ClusterDomain is the lab's cluster DNS domain, kubelet's clusterDomain.
const ClusterDomain = "cluster.local"

//go:embed coredns.yaml
var corednsManifest string

var corednsTemplate = template.Must(template.New("coredns.yaml").Parse(corednsManifest))

// DNSServiceIP is the kube-dns Service's address of family f: the tenth of
// the family's Service range, as kubeadm and kind choose it (10.96.0.10,
// fd00:10:96::a).
func DNSServiceIP(f family.Family) net.IP {
	p := netip.MustParsePrefix(clusterNetworks[f].ServiceCIDR)
	a := p.Masked().Addr().As16()
	a[15] += 10
	ip := netip.AddrFrom16(a)
	if f == family.IPv4 {
		ip = ip.Unmap()
	}
	return net.IP(ip.AsSlice())
}

// DNSServiceIPs are the kube-dns Service's addresses, the primary family's
// first; kubelet's clusterDNS is the first.
func (c *Cluster) DNSServiceIPs() []net.IP {
	var ips []net.IP
	for _, f := range c.Families() {
		ips = append(ips, DNSServiceIP(f))
	}
	return ips
}

// CoreDNSManifest renders the cluster DNS objects for the lab's families.
func (c *Cluster) CoreDNSManifest() ([]byte, error) {
	var b bytes.Buffer
	err := corednsTemplate.Execute(&b, struct {
		Image, Domain string
		ServiceIPs    []net.IP
	}{images.CoreDNSRef, ClusterDomain, c.DNSServiceIPs()})
	if err != nil {
		return nil, fmt.Errorf("rendering the CoreDNS manifest: %w", err)
	}
	return b.Bytes(), nil
}

// applyDNS applies the cluster DNS objects. It does not wait: without a
// CNI CoreDNS stays Pending, as on kind, and runs once one is applied.
func (c *Cluster) applyDNS(ctx context.Context) error {
	manifest, err := c.CoreDNSManifest()
	if err != nil {
		return err
	}
	cmd, err := c.KubectlCmd(ctx, "apply", "-f", "-")
	if err != nil {
		return err
	}
	cmd.Stdin = bytes.NewReader(manifest)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("applying the CoreDNS manifest: %w: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

// InternetDomains are the names the DNS server on the lab's internet host
// answers, with the internet host's own addresses: the domains reserved for
// examples (RFC 2606), so a tutorial's `curl http://example.com` reaches the
// lab's stand-in for the internet. Every other name is NXDOMAIN, as a name
// nobody registered is.
var InternetDomains = []string{"example.com", "example.net", "example.org"}

// internetCorefile is the configuration of the DNS server on the lab's
// internet host.
func internetCorefile(fams []family.Family) string {
	var s strings.Builder
	fmt.Fprintf(&s, "%s {\n    log\n", strings.Join(InternetDomains, " "))
	for _, f := range fams {
		rr := "A"
		if f == family.IPv6 {
			rr = "AAAA"
		}
		fmt.Fprintf(&s, "    template IN %s {\n        answer \"{{ .Name }} 60 IN %s %s\"\n    }\n", rr, rr, InternetAddr(f))
	}
	// Every other question about those names gets an empty answer, not a
	// failure: a resolver asking for A and AAAA at once must not give up on
	// the pair.
	s.WriteString("    template ANY ANY {\n        rcode NOERROR\n    }\n}\n")
	s.WriteString(". {\n    log\n    template ANY ANY {\n        rcode NXDOMAIN\n    }\n}\n")
	return s.String()
}

// InternetDNSLog is the log of the internet host's DNS server, one line a
// query.
func (c *Cluster) InternetDNSLog() string {
	return filepath.Join(c.controlPlaneDir(), "logs", "internet-dns.log")
}

// startInternetDNS runs CoreDNS (bin) in the internet namespace with
// internetCorefile; the nodes' resolv.conf points at it. Down stops it with
// the control plane's daemons.
func (c *Cluster) startInternetDNS(bin string, cgroups []string) error {
	dir := filepath.Join(c.controlPlaneDir(), "internet-dns")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	conf := filepath.Join(dir, "Corefile")
	if err := os.WriteFile(conf, []byte(internetCorefile(c.Families())), 0o644); err != nil {
		return fmt.Errorf("writing the internet DNS server's Corefile: %w", err)
	}
	_, err := proc.Start(proc.Spec{
		Path: bin, Args: []string{"-conf", conf},
		NetNS:   c.InternetNetNS(),
		Cgroups: cgroups,
		Dir:     dir,
		Log:     c.InternetDNSLog(),
		PIDFile: filepath.Join(c.controlPlaneDir(), "run", "internet-dns.pid"),
	})
	if err != nil {
		return fmt.Errorf("starting the internet host's DNS server: %w", err)
	}
	return nil
}

// nameservers are the nodes' resolv.conf servers: the internet host's DNS.
func (c *Cluster) nameservers() []net.IP {
	var ips []net.IP
	for _, f := range c.Families() {
		ips = append(ips, InternetAddr(f))
	}
	return ips
}

// Images lists the image references containerd holds on the lab's first
// node (every node imports the same), digests left out.
func (c *Cluster) Images(ctx context.Context) ([]string, error) {
	if len(c.Nodes) == 0 {
		return nil, fmt.Errorf("lab %s has no nodes", c.Name)
	}
	out, err := c.Exec(ctx, c.Nodes[0].Name, "ctr", "-n", "k8s.io", "images", "ls", "-q")
	if err != nil {
		return nil, fmt.Errorf("listing the images of %s: %w", c.Nodes[0].Name, err)
	}
	var refs []string
	for _, r := range strings.Fields(out) {
		if !strings.HasPrefix(r, "sha256:") && !strings.Contains(r, "@sha256:") {
			refs = append(refs, r)
		}
	}
	return refs, nil
}
