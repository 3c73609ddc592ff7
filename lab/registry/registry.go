// Package registry is the lab's image registry. The lab has no route out,
// so an image name from a tutorial (nicolaka/netshoot, registry.k8s.io/…)
// cannot be pulled from where it lives; the lab's internet host serves the
// lab's own images under those names instead, and every node's containerd
// uses it as the mirror of those registries. A pod whose image is pulled
// (imagePullPolicy Always, the default for :latest) then gets the lab's copy;
// a name the registry does not hold fails as it would without a network.
//
// The registry protocol is go-containerregistry's (pkg/registry), with blobs
// on disk; Serve loads docker-archives into it by pushing them to itself.
package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcr "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Port is where the lab's registry listens on the internet host.
const Port = 5000

// Mirrored are the registries whose names the lab's registry answers for;
// each node's containerd sends their pulls to it.
var Mirrored = []string{"docker.io", "registry.k8s.io"}

// Mirrors reports whether ref names an image of a registry the lab's
// registry stands in for (a name without a registry is docker.io's).
func Mirrors(ref string) bool {
	t, err := name.NewTag(ref)
	if err != nil {
		return false
	}
	host := t.RegistryStr()
	if host == name.DefaultRegistry {
		host = "docker.io"
	}
	return slices.Contains(Mirrored, host)
}

// Image is a docker-archive and the references it is served under.
type Image struct {
	Archive string
	Refs    []string
}

// ParseImage reads ARCHIVE=REF[,REF...], the command line's form of Image.
func ParseImage(s string) (Image, error) {
	archive, refs, ok := strings.Cut(s, "=")
	if !ok || archive == "" || refs == "" {
		return Image{}, fmt.Errorf("image %q: want ARCHIVE=REF[,REF...]", s)
	}
	im := Image{Archive: archive, Refs: strings.Split(refs, ",")}
	for _, r := range im.Refs {
		if _, err := name.NewTag(r); err != nil {
			return Image{}, fmt.Errorf("image %q: reference %q: %w", s, r, err)
		}
	}
	return im, nil
}

// Repository is the path a reference is served under (its repository and
// tag without the registry): "nicolaka/netshoot:latest" for
// docker.io/nicolaka/netshoot:latest, "library/debian:12" for debian:12.
func Repository(ref string) (string, error) {
	t, err := name.NewTag(ref)
	if err != nil {
		return "", fmt.Errorf("reference %q: %w", ref, err)
	}
	return t.RepositoryStr() + ":" + t.TagStr(), nil
}

// Serve runs the registry on ln until ctx ends, keeping blobs under dir,
// after loading every image (a failed one is logged and skipped: the others
// are still served). ready is called once all are loaded; the log receives
// one line per request.
func Serve(ctx context.Context, ln net.Listener, dir string, images []Image, logw io.Writer, ready func()) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating the registry's blob directory: %w", err)
	}
	l := log.New(logw, "registry: ", log.LstdFlags)
	srv := &http.Server{
		Handler:           ggcr.New(ggcr.WithBlobHandler(ggcr.NewDiskBlobHandler(dir)), ggcr.Logger(l)),
		ReadHeaderTimeout: 30 * time.Second,
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	host := ln.Addr().String()
	var failed []string
	for _, im := range images {
		if err := load(ctx, host, im); err != nil {
			l.Printf("not serving %s: %v", im.Archive, err)
			failed = append(failed, im.Archive)
			continue
		}
		l.Printf("serving %s as %s", filepath.Base(im.Archive), strings.Join(im.Refs, ", "))
	}
	if len(failed) == 0 && ready != nil {
		ready()
	}
	select {
	case err := <-served:
		return fmt.Errorf("serving the registry: %w", err)
	case <-ctx.Done():
	}
	shut, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(shut)
	if errors.Is(err, context.DeadlineExceeded) {
		// A client still holds a request open (a pull cut short, a
		// body never read): the registry is going away regardless.
		l.Printf("clients still connected after 5s: closing their connections")
		err = srv.Close()
	}
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("stopping the registry: %w", err)
	}
	return nil
}

// NameLabel is the image label that tells the registry's copies apart: each
// reference is served as the archive's image with this label set to the
// reference. The layers are the same; the configuration, and so the image
// ID, differ. A node that imported the archive under another name then
// never pulls an image with the ID of its own: containerd 1.6's CRI loses
// the imported name when a pull under a new name lands on an existing ID
// (seen in the lab: a pod of the imported netshoot failed with
// ErrImageNeverPull after a test pulled the same image as
// glibc-dns-testing).
const NameLabel = "dev.twill-net.lab.registry.name"

// load pushes an archive to the registry at host under each of its refs.
func load(ctx context.Context, host string, im Image) error {
	img, err := tarball.ImageFromPath(im.Archive, nil)
	if err != nil {
		return fmt.Errorf("reading %s: %w", im.Archive, err)
	}
	for _, r := range im.Refs {
		repo, err := Repository(r)
		if err != nil {
			return err
		}
		named, err := withName(img, r)
		if err != nil {
			return fmt.Errorf("%s as %s: %w", im.Archive, r, err)
		}
		dst, err := name.NewTag(host+"/"+repo, name.Insecure)
		if err != nil {
			return fmt.Errorf("reference %s on %s: %w", repo, host, err)
		}
		if err := remote.Write(dst, named, remote.WithContext(ctx)); err != nil {
			return fmt.Errorf("pushing %s as %s: %w", im.Archive, repo, err)
		}
	}
	return nil
}

// withName is img with NameLabel set to ref.
func withName(img v1.Image, ref string) (v1.Image, error) {
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading the image configuration: %w", err)
	}
	cfg = cfg.DeepCopy()
	if cfg.Config.Labels == nil {
		cfg.Config.Labels = map[string]string{}
	}
	cfg.Config.Labels[NameLabel] = ref
	return mutate.ConfigFile(img, cfg)
}

// HostsTOML is containerd's hosts.toml for a mirrored registry: pulls and
// resolves go to the lab's registry at addr (host:port, plain HTTP), and to
// nowhere else (the lab has no route to the registry's own server).
func HostsTOML(registry, addr string) string {
	server := "https://" + registry
	if registry == "docker.io" {
		server = "https://registry-1.docker.io"
	}
	return fmt.Sprintf("# The lab's registry on its internet host mirrors %s (lab/registry).\nserver = %q\n\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", registry, server, addr)
}
