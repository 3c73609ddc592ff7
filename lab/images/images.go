// Package images builds the container images Twill's lab needs besides Twill
// itself: the pod sandbox ("pause") image, the netshoot test image and the
// CoreDNS image of the cluster DNS. Each image is written as a
// docker-archive, which the lab's registry (lab/registry, on the internet
// host; every node's containerd mirrors docker.io and registry.k8s.io to
// it) serves under the image's reference, and `ctr -n k8s.io images import`
// or `kind load image-archive` can load as well. Builds are cached: an
// archive newer than everything it is made from is left alone.
package images

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

const (
	// PauseRef is the reference of the lab's pod sandbox image, which
	// containerd's sandbox_image points at.
	PauseRef = "localhost/twill-lab/pause:1"
	// PauseArchive is where the pause image's archive goes, relative to the
	// repository root.
	PauseArchive = "_output/images/pause.tar"
	// NetshootRef is the reference of the test image pods in the lab run.
	NetshootRef = "localhost/twill-lab/netshoot:1"
	// NetshootArchive is where the netshoot image's archive goes, relative to
	// the repository root.
	NetshootArchive = "_output/images/netshoot.tar"
	// NetshootAlias is the name tutorials use for netshoot; every node
	// carries the lab's netshoot under it too, so they run verbatim.
	NetshootAlias = "docker.io/nicolaka/netshoot:latest"
	// CoreDNSVersion is the CoreDNS release hack/tools/coredns pins.
	CoreDNSVersion = "v1.15.0"
	// CoreDNSRef is the reference of the cluster DNS image: the name
	// kubeadm deploys, so manifests written for kubeadm run unchanged.
	CoreDNSRef = "registry.k8s.io/coredns/coredns:" + CoreDNSVersion
	// CoreDNSArchive is where the CoreDNS image's archive goes, relative to
	// the repository root.
	CoreDNSArchive = "_output/images/coredns.tar"
	// BaseRef is the Debian base image netshoot is built from; it lives only
	// in buildah's local storage, made by hack/debian-base.sh.
	BaseRef = "docker.io/library/debian:bookworm-slim"
)

// Image names one image the lab imports into every node.
type Image struct {
	// Ref is the image reference pods and containerd use.
	Ref string
	// Archive is the docker-archive's path relative to the repository root.
	Archive string
	// Aliases are further references of the same image, tagged in every
	// node after the import.
	Aliases []string
}

// All lists the images Build makes, for the lab to import into each node.
func All() []Image {
	return []Image{
		{Ref: PauseRef, Archive: PauseArchive},
		{Ref: NetshootRef, Archive: NetshootArchive, Aliases: []string{NetshootAlias}},
		{Ref: CoreDNSRef, Archive: CoreDNSArchive},
	}
}

// Build makes the pause, netshoot and CoreDNS archives under
// repoRoot/_output/images,
// skipping each one whose archive is newer than its inputs. It needs root,
// buildah and the Go toolchain; progress and tool output go to log. Only one
// Build runs at a time per repository (a lock file serialises callers).
func Build(ctx context.Context, repoRoot string, log io.Writer) error {
	b, unlock, err := newBuilder(ctx, repoRoot, log)
	if err != nil {
		return err
	}
	defer unlock()
	if err := b.pause(ctx); err != nil {
		return fmt.Errorf("building %s: %w", PauseRef, err)
	}
	if err := b.netshoot(ctx); err != nil {
		return fmt.Errorf("building %s: %w", NetshootRef, err)
	}
	if err := b.coredns(ctx); err != nil {
		return fmt.Errorf("building %s: %w", CoreDNSRef, err)
	}
	return nil
}

// builder runs the build steps for one repository.
type builder struct {
	root string
	log  io.Writer
}

// newBuilder checks for buildah, makes the archives' directory under repoRoot
// and takes its lock: one build at a time per repository. The returned
// function releases the lock.
func newBuilder(ctx context.Context, repoRoot string, log io.Writer) (*builder, func(), error) {
	if log == nil {
		log = io.Discard
	}
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		return nil, nil, fmt.Errorf("resolving repository root %q: %w", repoRoot, err)
	}
	if _, err := exec.LookPath("buildah"); err != nil {
		return nil, nil, errors.New("building lab images: buildah not found; install it with `make deps` (as root)")
	}
	outDir := filepath.Join(root, "_output", "images")
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("creating %s: %w", outDir, err)
	}
	unlock, err := lock(ctx, filepath.Join(outDir, ".build.lock"))
	if err != nil {
		return nil, nil, err
	}
	return &builder{root: root, log: log}, unlock, nil
}

// commit runs the buildah steps that fill the working container, commits
// it as ref and writes ref's archive.
func (b *builder) commit(ctx context.Context, steps [][]string, ref, archive string) error {
	for _, s := range steps {
		if err := b.run(exec.CommandContext(ctx, s[0], s[1:]...)); err != nil {
			return err
		}
	}
	return b.push(ctx, ref, archive)
}

// recipeFiles are this package's own non-test sources: a change to how an
// image is built must rebuild it.
func (b *builder) recipeFiles() []string {
	return []string{filepath.Join(b.root, "lab", "images")}
}

func (b *builder) pause(ctx context.Context) error {
	archive := filepath.Join(b.root, PauseArchive)
	inputs := append(b.recipeFiles(),
		filepath.Join(b.root, "cmd", "pause"),
		filepath.Join(b.root, "version"),
		filepath.Join(b.root, "go.mod"),
		filepath.Join(b.root, "VERSION"),
	)
	fresh, err := upToDate(archive, inputs, time.Time{})
	if err != nil {
		return err
	}
	if fresh {
		fmt.Fprintf(b.log, "images: %s is up to date\n", PauseArchive)
		return nil
	}
	fmt.Fprintf(b.log, "images: building %s\n", PauseRef)

	tmp, err := os.MkdirTemp("", "twill-pause-")
	if err != nil {
		return fmt.Errorf("creating a build directory: %w", err)
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "pause")
	version, err := os.ReadFile(filepath.Join(b.root, "VERSION"))
	if err != nil {
		return fmt.Errorf("reading VERSION: %w", err)
	}
	ldflags := "-s -w -X github.com/twill-net/twill/version.Version=v" + strings.TrimSpace(string(version))
	gobuild := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", ldflags, "-o", bin, "./cmd/pause")
	gobuild.Dir = b.root
	gobuild.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-buildvcs=false")
	if err := b.run(gobuild); err != nil {
		return fmt.Errorf("compiling cmd/pause: %w", err)
	}

	ctr, err := b.output(ctx, "buildah", "from", "--pull=never", "scratch")
	if err != nil {
		return err
	}
	defer b.cleanupContainer(ctr)
	steps := [][]string{
		{"buildah", "copy", "--chmod", "0755", ctr, bin, "/pause"},
		{"buildah", "config", "--entrypoint", `["/pause"]`, "--cmd", "", "--user", "65535:65535",
			"--label", "org.opencontainers.image.title=twill-lab-pause", ctr},
		{"buildah", "commit", "--quiet", "--rm", "--format", "docker", ctr, PauseRef},
	}
	return b.commit(ctx, steps, PauseRef, archive)
}

func (b *builder) netshoot(ctx context.Context) error {
	archive := filepath.Join(b.root, NetshootArchive)
	dir := filepath.Join(b.root, "images", "netshoot")
	baseCreated, err := b.baseImage(ctx)
	if err != nil {
		return err
	}
	fresh, err := upToDate(archive, append(b.recipeFiles(), dir), baseCreated)
	if err != nil {
		return err
	}
	if fresh {
		fmt.Fprintf(b.log, "images: %s is up to date\n", NetshootArchive)
		return nil
	}
	return b.buildContext(ctx, dir, NetshootRef, archive)
}

// CoreDNSBinary builds CoreDNS with hack/coredns-build.sh when its cached
// binary is missing or stale, and returns the binary's path; the script's
// progress goes to log.
func CoreDNSBinary(ctx context.Context, repoRoot string, log io.Writer) (string, error) {
	return BuildScript(ctx, repoRoot, "hack/coredns-build.sh", log)
}

// BuildScript runs one of the repository's cached build scripts (script,
// relative to repoRoot), which prints where its result is, and returns
// that; the script's progress goes to log.
func BuildScript(ctx context.Context, repoRoot, script string, log io.Writer) (string, error) {
	if log == nil {
		log = io.Discard
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(repoRoot, script))
	cmd.Dir = repoRoot
	cmd.Stdout, cmd.Stderr = &out, log
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s: %w", script, err)
	}
	res := strings.TrimSpace(out.String())
	if res == "" {
		return "", fmt.Errorf("%s printed no path", script)
	}
	return res, nil
}

// coredns builds the CoreDNS binary (hack/coredns-build.sh, cached) and
// puts it alone in an image, as CoreDNS's own image does. The image's user
// is root: the Deployment drops every capability but NET_BIND_SERVICE, which
// a non-root user would need as a file capability on the binary.
func (b *builder) coredns(ctx context.Context) error {
	archive := filepath.Join(b.root, CoreDNSArchive)
	bin, err := CoreDNSBinary(ctx, b.root, b.log)
	if err != nil {
		return err
	}
	fresh, err := upToDate(archive, append(b.recipeFiles(), bin), time.Time{})
	if err != nil {
		return err
	}
	if fresh {
		fmt.Fprintf(b.log, "images: %s is up to date\n", CoreDNSArchive)
		return nil
	}
	fmt.Fprintf(b.log, "images: building %s\n", CoreDNSRef)
	ctr, err := b.output(ctx, "buildah", "from", "--pull=never", "scratch")
	if err != nil {
		return err
	}
	defer b.cleanupContainer(ctr)
	steps := [][]string{
		{"buildah", "copy", "--chmod", "0755", ctr, bin, "/coredns"},
		{"buildah", "config", "--entrypoint", `["/coredns"]`, "--cmd", "", "--user", "0:0",
			"--port", "53/udp", "--port", "53/tcp", "--port", "9153/tcp",
			"--label", "org.opencontainers.image.title=twill-lab-coredns",
			"--label", "org.opencontainers.image.version=" + CoreDNSVersion, ctr},
		{"buildah", "commit", "--quiet", "--rm", "--format", "docker", ctr, CoreDNSRef},
	}
	return b.commit(ctx, steps, CoreDNSRef, archive)
}

// baseImage makes sure the Debian base image exists in buildah's storage,
// running hack/debian-base.sh when it does not, and returns when it was made.
func (b *builder) baseImage(ctx context.Context) (time.Time, error) {
	created, err := b.imageCreated(ctx, BaseRef)
	if err == nil {
		return created, nil
	}
	script := filepath.Join(b.root, "hack", "debian-base.sh")
	if _, serr := os.Stat(script); serr != nil {
		return time.Time{}, fmt.Errorf("base image %s is missing and %s cannot make it: %w", BaseRef, script, serr)
	}
	fmt.Fprintf(b.log, "images: %s is missing; running hack/debian-base.sh\n", BaseRef)
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Dir = b.root
	if err := b.run(cmd); err != nil {
		return time.Time{}, fmt.Errorf("making the base image: %w", err)
	}
	created, err = b.imageCreated(ctx, BaseRef)
	if err != nil {
		return time.Time{}, fmt.Errorf("hack/debian-base.sh ran but %s is still missing: %w", BaseRef, err)
	}
	return created, nil
}

// imageCreated returns the creation time buildah records for ref.
func (b *builder) imageCreated(ctx context.Context, ref string) (time.Time, error) {
	out, err := b.output(ctx, "buildah", "inspect", "--type", "image", "--format", "{{.FromImageID}} {{.OCIv1.Created}}", ref)
	if err != nil {
		return time.Time{}, err
	}
	// The output is "<id> 2026-11-23 17:00:00.123 +0000 UTC"; the id only
	// proves the image exists, and a missing date means "always fresh".
	_, date, _ := strings.Cut(out, " ")
	t, perr := time.Parse("2006-01-02 15:04:05.999999999 -0700 MST", strings.TrimSpace(date))
	if perr != nil {
		return time.Time{}, nil
	}
	return t, nil
}

// push writes ref to archive as a docker-archive carrying the reference,
// through a temporary file so a failed push never leaves a truncated archive.
func (b *builder) push(ctx context.Context, ref, archive string) error {
	tmp := archive + ".tmp"
	_ = os.Remove(tmp)
	defer os.Remove(tmp)
	if err := b.run(exec.CommandContext(ctx, "buildah", "push", "--quiet", ref, "docker-archive:"+tmp+":"+ref)); err != nil {
		return err
	}
	if err := os.Rename(tmp, archive); err != nil {
		return fmt.Errorf("moving the archive into place: %w", err)
	}
	fmt.Fprintf(b.log, "images: wrote %s\n", archive)
	return nil
}

// cleanupContainer removes a working container left by a failed build; after
// a successful `commit --rm` it is already gone and the error is ignored.
func (b *builder) cleanupContainer(ctr string) {
	cmd := exec.Command("buildah", "rm", ctr)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	_ = cmd.Run()
}

// run runs cmd with its output going to the build log, and on failure
// returns an error quoting the command and the tail of its output.
func (b *builder) run(cmd *exec.Cmd) error {
	var tail bytes.Buffer
	w := io.MultiWriter(b.log, &tail)
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(cmd.Args, " "), err, lastLines(tail.String(), 10))
	}
	return nil
}

// output runs a command and returns its trimmed standard output.
func (b *builder) output(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

// upToDate reports whether archive exists and is newer than every file under
// inputs (files or directories, test files excluded) and than notBefore.
func upToDate(archive string, inputs []string, notBefore time.Time) (bool, error) {
	st, err := os.Stat(archive)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("checking %s: %w", archive, err)
	}
	built := st.ModTime()
	if !notBefore.IsZero() && !built.After(notBefore) {
		return false, nil
	}
	stale := errors.New("stale")
	for _, in := range inputs {
		err := filepath.WalkDir(in, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() || strings.HasSuffix(path, "_test.go") {
				return nil
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			if !info.ModTime().Before(built) {
				return stale
			}
			return nil
		})
		if errors.Is(err, stale) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("checking build inputs under %s: %w", in, err)
		}
	}
	return true, nil
}

// lock takes an exclusive flock on path, waiting for another build to finish
// or ctx to end, and returns the function that releases it.
func lock(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening lock file %s: %w", path, err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("waiting for another image build to finish (%s): %w", path, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// lastLines returns at most n trailing lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
