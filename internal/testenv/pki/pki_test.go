package pki

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"strings"
	"testing"
)

func TestIssueVerifies(t *testing.T) {
	ca, err := NewCA("lab-ca")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := ca.WriteCA(dir, "ca"); err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadCA(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := loaded.Issue(Spec{CommonName: "kube-apiserver", IPs: []net.IP{net.ParseIP("172.18.0.2")}, DNSNames: []string{"kubernetes"}, Server: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Fatalf("issued pair does not match: %v", err)
	}
	b, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: "172.18.0.2"}); err != nil {
		t.Errorf("serving cert does not verify for its IP: %v", err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: "172.18.0.3"}); err == nil {
		t.Errorf("serving cert verifies for an IP it was not issued for")
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Errorf("server-only cert verifies as a client cert")
	}

	other, err := NewCA("other")
	if err != nil {
		t.Fatal(err)
	}
	foreign := x509.NewCertPool()
	foreign.AddCert(other.Cert)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: foreign}); err == nil {
		t.Errorf("cert verifies against a different CA")
	}
}

func TestClientCertGroups(t *testing.T) {
	ca, err := NewCA("lab-ca")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := ca.Issue(Spec{CommonName: "admin", Organization: []string{"system:masters"}, Client: true})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(certPEM)
	cert, _ := x509.ParseCertificate(b.Bytes)
	if cert.Subject.CommonName != "admin" || len(cert.Subject.Organization) != 1 || cert.Subject.Organization[0] != "system:masters" {
		t.Errorf("subject = %v, want CN=admin O=system:masters", cert.Subject)
	}
	kc := string(Kubeconfig("https://172.18.0.2:6443", ca.CertPEM, certPEM, []byte("k")))
	for _, want := range []string{"server: https://172.18.0.2:6443", "certificate-authority-data: ", "current-context: lab"} {
		if !strings.Contains(kc, want) {
			t.Errorf("kubeconfig lacks %q:\n%s", want, kc)
		}
	}
}
