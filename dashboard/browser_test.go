package dashboard_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/strata-project/strata/dashboard"
	"github.com/strata-project/strata/internal/testenv"
)

// artifactDir is where screenshots go: $STRATA_ARTIFACTS when set, else a
// temporary folder of the test.
func artifactDir(t *testing.T) string {
	if d := os.Getenv("STRATA_ARTIFACTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

func browser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(testenv.Chromium(t)),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 1000),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	ctx, cancelTimeout := context.WithTimeout(ctx, 60*time.Second)
	t.Cleanup(func() {
		cancelTimeout()
		cancelCtx()
		cancelAlloc()
	})
	return ctx
}

// poll waits until the JavaScript expression is truthy, checking every 50 ms.
func poll(expr string, timeout time.Duration) chromedp.Action[chromedp.Void] {
	p := chromedp.Poll[any](expr, chromedp.WithPollingTimeout(timeout), chromedp.WithPollingInterval(50*time.Millisecond))
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := p(ctx, t)
		return chromedp.Void{}, err
	}
}

// TestBrowser loads the page in headless Chromium: it shows three app
// servers, shows one down within 3 s of the Source saying so, posts chaos
// actions with the admin key, and renders hostile names as text.
func TestBrowser(t *testing.T) {
	ctx := browser(t)

	src := &fakeSource{topo: threeApps()}
	chaos := make(chan *http.Request, 4)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /admin/chaos/{action}", func(w http.ResponseWriter, r *http.Request) {
		chaos <- r
		w.WriteHeader(http.StatusAccepted)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	d, err := dashboard.New(dashboard.Config{Source: src, ChaosURL: "/admin", Title: "Strata on loopback"})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	mux.Handle("/dashboard/", http.StripPrefix("/dashboard", d))

	const apps = `document.querySelectorAll('#tiers tr.node[data-role="app"]')`
	const app2Down = `(() => {
		const r = [...` + apps + `].find(r => r.dataset.name === 'app-2');
		return !!r && r.dataset.health === 'down' && r.querySelector('.pill').textContent === 'down';
	})()`
	if err := chromedp.Do(ctx,
		chromedp.Navigate(srv.URL+"/dashboard"), // redirected to /dashboard/
		poll(apps+`.length > 0`, 15*time.Second),
	); err != nil {
		t.Fatalf("page did not show app servers: %v", err)
	}
	if n, err := chromedp.Run(ctx, chromedp.Evaluate[int](apps+`.length`)); err != nil || n != 3 {
		t.Fatalf("app servers shown = %d (err %v), want 3", n, err)
	}
	if down, err := chromedp.Run(ctx, chromedp.Evaluate[bool](app2Down)); err != nil || down {
		t.Fatalf("app-2 shown down before it went down (err %v)", err)
	}

	src.set(func(t *dashboard.Topology) {
		app := &t.Tiers[1].Nodes[1]
		app.Health, app.Breaker, app.RPS, app.Note = dashboard.HealthDown, dashboard.BreakerOpen, dashboard.Num(0), "connection refused"
	})
	start := time.Now()
	if err := chromedp.Do(ctx, poll(app2Down, 3*time.Second)); err != nil {
		t.Fatalf("app-2 not shown down within 3 s: %v", err)
	}
	t.Logf("app-2 shown down %v after the source said so", time.Since(start).Round(time.Millisecond))
	upCount, err := chromedp.Run(ctx, chromedp.Evaluate[int](`[...`+apps+`].filter(r => r.dataset.health === 'up').length`))
	if err != nil || upCount != 2 {
		t.Fatalf("app servers up = %d (err %v), want 2", upCount, err)
	}

	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(artifactDir(t), "dashboard.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", shot)

	// Chaos: without a key nothing is sent; with it, the action goes to
	// the chaos URL with the key in the Authorization header only.
	kill := chromedp.CSS(`#tiers tr.node[data-name="app-3"] button[data-action="kill-app"]`)
	if err := chromedp.Do(ctx,
		chromedp.Click(kill),
		poll(`document.getElementById('action-status').textContent.includes('admin key')`, 3*time.Second),
	); err != nil {
		t.Fatalf("pressing Kill without a key did not ask for it: %v", err)
	}
	select {
	case r := <-chaos:
		t.Fatalf("chaos request sent without a key: %s", r.URL)
	default:
	}
	const key = "s3cret-admin-key"
	if err := chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.ID("adminkey"), key+"\r"), // Enter submits the form
		poll(`document.getElementById('keyform').classList.contains('set') && document.getElementById('adminkey').value === ''`, 3*time.Second),
		chromedp.Click(kill),
	); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-chaos:
		if got := r.PathValue("action"); got != "kill-app" {
			t.Errorf("action = %q, want kill-app", got)
		}
		if got := r.URL.Query().Get("target"); got != "3" {
			t.Errorf("target = %q, want 3", got)
		}
		if got := r.Header.Get("Authorization"); got != "Bearer "+key {
			t.Errorf("Authorization = %q, want the key as a bearer token", got)
		}
		if got := r.URL.String(); len(r.URL.Query()) != 1 {
			t.Errorf("chaos URL %q carries more than the target", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no chaos request after pressing Kill with the key set")
	}
	if err := chromedp.Do(ctx, poll(`document.getElementById('action-status').textContent.includes('202')`, 3*time.Second)); err != nil {
		t.Fatalf("result of the chaos action not shown: %v", err)
	}

	// Names and notes are operator-controlled: shown as text, never parsed.
	const evil = `<img src=x id=pwned onerror="document.body.dataset.pwned=1">`
	src.set(func(t *dashboard.Topology) {
		t.Tiers[2].Nodes[0].Name = evil
		t.Tiers[2].Nodes[0].Note = `<b id=bold>x</b>`
		t.Tiers = append(t.Tiers, dashboard.Tier{Name: `</table><script>document.body.dataset.pwned=1</script>`})
	})
	if err := chromedp.Do(ctx,
		poll(`[...document.querySelectorAll('#tiers td.name span')].some(s => s.textContent === `+"`"+evil+"`"+`)`, 3*time.Second),
	); err != nil {
		t.Fatalf("hostile name not shown as text: %v", err)
	}
	ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`!document.getElementById('pwned') && !document.getElementById('bold') &&
		!document.body.dataset.pwned && document.querySelectorAll('#tiers script').length === 0`))
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		t.Fatal("a node's name or note was parsed as HTML")
	}
}
