package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/strata-project/strata/internal/testenv"
)

// TestUpDashboardInBrowser opens the dashboard of a real `strata up` in headless Chromium:
// it shows three app servers, and one of them down within 3 s after it is really killed
// (SIGKILL through the chaos API). A screenshot is written as an artifact
// ($STRATA_ARTIFACTS, else the test's temporary folder).
func TestUpDashboardInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds the binary, runs the topology and a browser")
	}
	chrome := testenv.Chromium(t)
	bin := buildStrata(t)
	u, _ := startUp(t, bin, 30*time.Second, "--data", t.TempDir(), "--fresh", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0")
	defer func() {
		u.cmd.Process.Signal(os.Interrupt)
		<-u.exited
	}()

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome), chromedp.Flag("headless", true), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true), chromedp.NoFirstRun, chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, 60*time.Second)
	defer cancelT()

	const apps = `document.querySelectorAll('#tiers tr.node[data-role="app"]')`
	const app2Down = `[...` + apps + `].some(r => r.dataset.name === 'app-2' && r.dataset.health === 'down')`
	wait := func(expr string, d time.Duration) error {
		_, err := chromedp.Run(ctx, chromedp.Poll[any](expr, chromedp.WithPollingTimeout(d), chromedp.WithPollingInterval(50*time.Millisecond)))
		return err
	}
	if _, err := chromedp.Run(ctx, chromedp.Navigate(u.admin+"/dashboard/")); err != nil {
		t.Fatal(err)
	}
	if err := wait(apps+`.length === 3 && [...`+apps+`].every(r => r.dataset.health === 'up')`, 15*time.Second); err != nil {
		t.Fatalf("the dashboard did not show three app servers up: %v", err)
	}
	out, err := exec.Command(bin, "chaos", "kill-app", "2", "--url", u.admin, "--key", u.adminKey).CombinedOutput()
	if err != nil {
		t.Fatalf("strata chaos kill-app 2: %v\n%s", err, out)
	}
	killed := time.Now()
	if err := wait(app2Down, 3*time.Second); err != nil {
		t.Fatalf("the dashboard did not show app-2 down within 3 s of the kill: %v", err)
	}
	t.Logf("the page showed app-2 down %v after the kill", time.Since(killed).Round(time.Millisecond))

	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	dir := os.Getenv("STRATA_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(dir, "up-dashboard.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", shot)
}
