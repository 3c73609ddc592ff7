package images

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/twill-net/twill/lab/registry"
)

// The images Kubernetes' e2e tests run, as the lab builds them for `twill
// lab conformance`. Each archive carries the lab's own reference; the
// names the tests ask for (registry.k8s.io/e2e-test-images/…, whose tags
// come from the e2e binary's --list-images) are given to them by
// ConformanceImages and served by the lab's registry.
const (
	AgnhostRef     = "localhost/twill-lab/agnhost:1"
	AgnhostArchive = "_output/images/agnhost.tar"
	BusyboxRef     = "localhost/twill-lab/busybox:1"
	BusyboxArchive = "_output/images/busybox.tar"
	NginxRef       = "localhost/twill-lab/nginx:1"
	NginxArchive   = "_output/images/nginx.tar"
)

// testImages maps the repository name of an e2e test image to the lab's
// image that plays its part; images the tests list and this map lacks are
// not served (a test that needs one fails to pull it, and says so).
var testImages = map[string]Image{
	"agnhost":           {Ref: AgnhostRef, Archive: AgnhostArchive},
	"busybox":           {Ref: BusyboxRef, Archive: BusyboxArchive},
	"nginx":             {Ref: NginxRef, Archive: NginxArchive},
	"glibc-dns-testing": {Ref: NetshootRef, Archive: NetshootArchive},
	"pause":             {Ref: PauseRef, Archive: PauseArchive},
}

// ConformanceImages returns the lab images under the references listed
// (the e2e binary's --list-images), one Image per archive with every
// reference it is served under as Aliases, and the listed references no
// lab image stands in for.
func ConformanceImages(listed []string) (imgs []Image, missing []string) {
	byArchive := map[string]*Image{}
	var order []string
	for _, ref := range listed {
		ref = strings.TrimSpace(ref)
		if ref == "" {
			continue
		}
		repo := ref
		if i := strings.LastIndexByte(repo, ':'); i > strings.LastIndexByte(repo, '/') {
			repo = repo[:i]
		}
		base := repo[strings.LastIndexByte(repo, '/')+1:]
		im, ok := testImages[base]
		// Only the registries the lab mirrors reach its registry (an image
		// of a private registry is what the tests expect to fail to pull).
		if !ok || !registry.Mirrors(ref) {
			missing = append(missing, ref)
			continue
		}
		if byArchive[im.Archive] == nil {
			cp := im
			byArchive[im.Archive] = &cp
			order = append(order, im.Archive)
		}
		byArchive[im.Archive].Aliases = append(byArchive[im.Archive].Aliases, ref)
	}
	for _, a := range order {
		imgs = append(imgs, *byArchive[a])
	}
	return imgs, missing
}

// BuildConformance makes the agnhost, busybox and nginx archives under
// repoRoot/_output/images: agnhost from the program and certificates
// hack/conformance-build.sh put in binDir, busybox from the host's static
// busybox, nginx from Debian's. Like Build it skips what is up to date.
func BuildConformance(ctx context.Context, repoRoot, binDir string, log io.Writer) error {
	b, unlock, err := newBuilder(ctx, repoRoot, log)
	if err != nil {
		return err
	}
	defer unlock()
	baseCreated, err := b.baseImage(ctx)
	if err != nil {
		return err
	}
	if err := b.agnhost(ctx, binDir, baseCreated); err != nil {
		return fmt.Errorf("building %s: %w", AgnhostRef, err)
	}
	if err := b.containerfile(ctx, "nginx", NginxRef, NginxArchive, baseCreated); err != nil {
		return fmt.Errorf("building %s: %w", NginxRef, err)
	}
	if err := b.busybox(ctx); err != nil {
		return fmt.Errorf("building %s: %w", BusyboxRef, err)
	}
	return nil
}

// agnhost builds images/agnhost/Containerfile with the agnhost program,
// its certificates and CoreDNS in the build context.
func (b *builder) agnhost(ctx context.Context, binDir string, baseCreated time.Time) error {
	archive := filepath.Join(b.root, AgnhostArchive)
	dir := filepath.Join(b.root, "images", "agnhost")
	coredns, err := CoreDNSBinary(ctx, b.root, b.log)
	if err != nil {
		return err
	}
	files := []string{filepath.Join(binDir, "agnhost"), filepath.Join(binDir, "localhost.crt"), filepath.Join(binDir, "localhost.key"), coredns}
	fresh, err := upToDate(archive, append(append(b.recipeFiles(), dir), files...), baseCreated)
	if err != nil || fresh {
		return err
	}
	ctxDir, err := os.MkdirTemp("", "twill-agnhost-")
	if err != nil {
		return fmt.Errorf("creating a build directory: %w", err)
	}
	defer os.RemoveAll(ctxDir)
	for _, f := range append(files, filepath.Join(dir, "Containerfile")) {
		if err := copyFile(f, filepath.Join(ctxDir, filepath.Base(f))); err != nil {
			return err
		}
	}
	return b.buildContext(ctx, ctxDir, AgnhostRef, archive)
}

// containerfile builds images/<name>/Containerfile, which needs nothing but
// the Debian base and its mirror.
func (b *builder) containerfile(ctx context.Context, name, ref, archive string, baseCreated time.Time) error {
	dir := filepath.Join(b.root, "images", name)
	fresh, err := upToDate(filepath.Join(b.root, archive), append(b.recipeFiles(), dir), baseCreated)
	if err != nil || fresh {
		return err
	}
	return b.buildContext(ctx, dir, ref, filepath.Join(b.root, archive))
}

// buildContext runs buildah build on dir's Containerfile and writes the
// image's archive. chroot isolation with the host's network: buildah makes
// no network namespace, bridge or firewall rule of its own, so nothing is
// added to the host's network and apt reaches the Debian mirror (the one
// hack/debian-base.sh took from the host's apt configuration) directly.
func (b *builder) buildContext(ctx context.Context, dir, ref, archive string) error {
	fmt.Fprintf(b.log, "images: building %s from %s\n", ref, filepath.Join(dir, "Containerfile"))
	build := exec.CommandContext(ctx, "buildah", "build", "--pull=never", "--isolation", "chroot",
		"--network", "host", "--format", "docker", "--layers=false",
		"-f", filepath.Join(dir, "Containerfile"), "-t", ref, dir)
	if err := b.run(build); err != nil {
		return err
	}
	return b.push(ctx, ref, archive)
}

// busybox makes an image of the host's static busybox alone, with a link
// in /bin for each applet, as the busybox image is.
func (b *builder) busybox(ctx context.Context) error {
	archive := filepath.Join(b.root, BusyboxArchive)
	bin, err := exec.LookPath("busybox")
	if err != nil {
		return errors.New("busybox not found: install busybox-static (`make deps`)")
	}
	if bin, err = filepath.EvalSymlinks(bin); err != nil {
		return fmt.Errorf("resolving %s: %w", bin, err)
	}
	f, err := elf.Open(bin)
	if err != nil {
		return fmt.Errorf("%s: %w", bin, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is linked dynamically; the busybox image needs busybox-static", bin)
		}
	}
	fresh, err := upToDate(archive, append(b.recipeFiles(), bin), time.Time{})
	if err != nil || fresh {
		return err
	}
	fmt.Fprintf(b.log, "images: building %s\n", BusyboxRef)
	rootfs, err := os.MkdirTemp("", "twill-busybox-")
	if err != nil {
		return fmt.Errorf("creating a build directory: %w", err)
	}
	defer os.RemoveAll(rootfs)
	for _, d := range []string{"bin", "tmp", "etc"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			return err
		}
	}
	if err := copyFile(bin, filepath.Join(rootfs, "bin", "busybox")); err != nil {
		return err
	}
	applets, err := b.output(ctx, bin, "--list")
	if err != nil {
		return err
	}
	for _, a := range strings.Fields(applets) {
		if a == "busybox" || strings.Contains(a, "/") {
			continue
		}
		if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", a)); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("linking applet %s: %w", a, err)
		}
	}
	ctr, err := b.output(ctx, "buildah", "from", "--pull=never", "scratch")
	if err != nil {
		return err
	}
	defer b.cleanupContainer(ctr)
	steps := [][]string{
		{"buildah", "copy", ctr, rootfs, "/"},
		{"buildah", "config", "--cmd", `["sh"]`, "--env", "PATH=/bin", "--label", "org.opencontainers.image.title=twill-lab-busybox", ctr},
		{"buildah", "commit", "--quiet", "--rm", "--format", "docker", ctr, BusyboxRef},
	}
	return b.commit(ctx, steps, BusyboxRef, archive)
}

// copyFile copies src to dst, keeping its mode bits.
func copyFile(src, dst string) error {
	st, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("copying %s: %w", src, err)
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("copying %s: %w", src, err)
	}
	if err := os.WriteFile(dst, b, st.Mode().Perm()); err != nil {
		return fmt.Errorf("copying %s to %s: %w", src, dst, err)
	}
	return nil
}
