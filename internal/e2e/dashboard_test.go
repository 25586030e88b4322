package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/accessibility"
	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/dom"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/makiuchi-d/gozxing"
	"github.com/makiuchi-d/gozxing/qrcode"

	"github.com/linkpop/linkpop/client"
	"github.com/linkpop/linkpop/internal/wait"
)

// xssTag is a tag that runs script if the dashboard ever renders API
// values as HTML.
const xssTag = `<img src=x onerror=alert(1)>`

// uiTimeout bounds one step in the browser: generous, the machine is
// shared and has two cores.
const uiTimeout = 60 * time.Second

// chromiumPath is the browser the dashboard test drives: LINKPOP_CHROMIUM,
// else Debian's chromium, else "".
func chromiumPath() string {
	if p := os.Getenv("LINKPOP_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// browserSession is one headless Chromium tab on the dashboard, with
// everything the page did recorded: the URL of every request, console
// errors and exceptions, CSP violations and JavaScript dialogs.
type browserSession struct {
	t        *testing.T
	ctx      context.Context
	base     string // the origin, http://127.0.0.1:port
	download string // directory downloads land in

	mu       sync.Mutex
	requests []string
	problems []string // console errors, exceptions, CSP violations
	dialogs  []string
}

func newBrowserSession(t *testing.T, chromium, base string) *browserSession {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.NoSandbox, // CI runs as root
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("lang", "en-US"),
		// Nothing may leave 127.0.0.1: every request but loopback ones
		// (which Chromium never proxies) goes to a closed port and fails.
		chromedp.ProxyServer("http://127.0.0.1:9"),
		chromedp.WindowSize(1280, 800),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelCtx(); cancelAlloc() })
	b := &browserSession{t: t, ctx: ctx, base: base, download: t.TempDir()}
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start chromium %s: %v", chromium, err)
	}
	err := chromedp.Listen(ctx, func(ev any) {
		b.mu.Lock()
		defer b.mu.Unlock()
		switch ev := ev.(type) {
		case *network.EventRequestWillBeSent:
			b.requests = append(b.requests, ev.Request.URL)
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			msg := d.Text
			if d.Exception != nil {
				msg += " " + d.Exception.Description
			}
			b.problems = append(b.problems, fmt.Sprintf("exception at %s:%d: %s", d.URL, d.LineNumber, msg))
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert {
				var parts []string
				for _, a := range ev.Args {
					parts = append(parts, string(a.Value)+a.Description)
				}
				b.problems = append(b.problems, "console.error: "+strings.Join(parts, " "))
			}
		case *cdplog.EventEntryAdded:
			// Failed API answers (401, 404: expected here) log as
			// network errors; anything else at error level is a problem.
			if ev.Entry.Level == cdplog.EntryLevelError && ev.Entry.Source != cdplog.EntrySourceNetwork {
				b.problems = append(b.problems, fmt.Sprintf("%s: %s", ev.Entry.Source, ev.Entry.Text))
			}
		case *page.EventJavascriptDialogOpening:
			b.dialogs = append(b.dialogs, string(ev.Type)+": "+ev.Message)
			go chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: false})
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	b.must(chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		if _, err := cdp.Call(ctx, t, network.Enable, network.EnableParams{}); err != nil {
			return err
		}
		if _, err := cdp.Call(ctx, t, cdplog.Enable, cdp.Empty{}); err != nil {
			return err
		}
		_, err := cdp.Call(ctx, t, accessibility.Enable, cdp.Empty{})
		return err
	}))
	yes := true
	if _, err := chromedp.CallBrowser(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: b.download, EventsEnabled: &yes,
	}); err != nil {
		t.Fatalf("download behaviour: %v", err)
	}
	return b
}

// must runs actions with uiTimeout, failing the test on an error.
func (b *browserSession) must(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, uiTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("browser: %v\n%s", err, b.report())
	}
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](b *browserSession, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, uiTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

func (b *browserSession) report() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return fmt.Sprintf("problems: %q\ndialogs: %q", b.problems, b.dialogs)
}

// element resolves the first element whose computed ARIA role is r and
// whose accessible name is name, as Chromium's accessibility tree has
// them (the names the issue promises are what the test looks for), to a
// JavaScript object; "" when there is none yet. An empty r matches any
// role.
func element(ctx context.Context, t *chromedp.Target, r, name string) (runtime.RemoteObjectID, error) {
	doc, err := cdp.Call(ctx, t, runtime.Evaluate, runtime.EvaluateParams{Expression: "document"})
	if err != nil || doc.Result == nil || doc.Result.ObjectID == "" {
		return "", err
	}
	res, err := cdp.Call(ctx, t, accessibility.QueryAXTree, accessibility.QueryAXTreeParams{ObjectID: doc.Result.ObjectID, AccessibleName: name, Role: r})
	if err != nil {
		return "", err
	}
	for _, an := range res.Nodes {
		if an.Ignored || an.BackendDOMNodeID == 0 || an.Role != nil && string(an.Role.Value) == `"StaticText"` {
			continue
		}
		obj, err := cdp.Call(ctx, t, dom.ResolveNode, dom.ResolveNodeParams{BackendNodeID: an.BackendDOMNodeID})
		if err != nil {
			return "", err
		}
		return obj.Object.ObjectID, nil
	}
	return "", nil
}

// on calls the JavaScript function fn with this = the element (r, name)
// and args, waiting until the element exists and fn returns a string
// (null: not ready yet, try again). It returns that string.
func (b *browserSession) on(r, name, fn string, args ...any) string {
	b.t.Helper()
	var out string
	var lastErr error
	call := chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		id, err := element(ctx, t, r, name)
		if err != nil || id == "" {
			lastErr = err
			return nil
		}
		// The arguments go into the function's text as JSON: CDP drops
		// an empty string argument.
		raw, err := json.Marshal(args)
		if err != nil {
			return err
		}
		decl := fmt.Sprintf("function() { return (%s).apply(this, %s); }", fn, raw)
		yes := true
		res, err := cdp.Call(ctx, t, runtime.CallFunctionOn, runtime.CallFunctionOnParams{
			FunctionDeclaration: decl, ObjectID: id, ReturnByValue: &yes, AwaitPromise: &yes,
		})
		if err != nil || res.ExceptionDetails != nil {
			lastErr = fmt.Errorf("%v %v", err, res.ExceptionDetails)
			return nil
		}
		out = ""
		if res.Result != nil && len(res.Result.Value) > 0 {
			_ = json.Unmarshal(res.Result.Value, &out)
		}
		return nil
	})
	ok := false
	wait.For(b.t, uiTimeout, fmt.Sprintf("%s %q (last error: %v)", r, name, lastErr), func() bool {
		out = ""
		ctx, cancel := context.WithTimeout(b.ctx, uiTimeout)
		defer cancel()
		if err := chromedp.Do(ctx, call); err != nil {
			b.t.Fatalf("browser: %v\n%s", err, b.report())
		}
		ok = out != ""
		return ok
	})
	return out
}

// visible is the start of every action's function: wait for the element
// to be shown and enabled.
const visible = `if (!this.isConnected || this.disabled || this.getClientRects().length === 0) return null; this.scrollIntoView({block: 'center'});`

func (b *browserSession) click(r, name string) {
	b.t.Helper()
	b.on(r, name, `function() { `+visible+` this.click(); return 'ok'; }`)
}

// fill replaces the text of the textbox named name, as typing would:
// the element's input event fires.
func (b *browserSession) fill(name, text string) { b.t.Helper(); b.fillRole("textbox", name, text) }

// fillRole is fill for another role of text field (searchbox).
func (b *browserSession) fillRole(r, name, text string) {
	b.t.Helper()
	b.on(r, name, `function(v) { `+visible+` this.focus(); this.value = v; this.dispatchEvent(new Event('input', {bubbles: true})); return 'ok'; }`, text)
}

// choose sets the select named name to value, as a user picking it.
func (b *browserSession) choose(name, value string) {
	b.t.Helper()
	got := b.on("combobox", name, `function(v) { `+visible+` this.value = v; this.dispatchEvent(new Event('input', {bubbles: true})); return this.value === v ? 'ok' : 'no such option'; }`, value)
	if got != "ok" {
		b.t.Fatalf("select %q: %s", name, got)
	}
}

// exists waits for the element (r, name) to be shown.
func (b *browserSession) exists(r, name string) {
	b.t.Helper()
	b.on(r, name, `function() { `+visible+` return 'ok'; }`)
}

// text is the text of the element (r, name), once it is shown.
func (b *browserSession) text(r, name string) string {
	b.t.Helper()
	return strings.TrimSpace(strings.TrimPrefix(b.on(r, name, `function() { `+visible+` return '=' + this.textContent; }`), "="))
}

// upload puts the file at path into the page's file input.
func (b *browserSession) upload(path string) {
	b.t.Helper()
	b.must(chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		res, err := cdp.Call(ctx, t, runtime.Evaluate, runtime.EvaluateParams{Expression: `document.querySelector('input[type=file]')`})
		if err != nil {
			return err
		}
		if res.Result == nil || res.Result.ObjectID == "" {
			return errors.New("no file input")
		}
		_, err = cdp.Call(ctx, t, dom.SetFileInputFiles, dom.SetFileInputFilesParams{Files: []string{path}, ObjectID: res.Result.ObjectID})
		return err
	}))
}

// waitText polls the text of the element (r, name) until ok accepts it.
func (b *browserSession) waitText(r, name, what string, ok func(string) bool) string {
	b.t.Helper()
	var last string
	wait.For(b.t, uiTimeout, what, func() bool {
		last = b.text(r, name)
		return ok(last)
	})
	return last
}

// waitJS polls a JavaScript condition.
func (b *browserSession) waitJS(what, expr string) {
	b.t.Helper()
	wait.For(b.t, uiTimeout, what, func() bool { return eval[bool](b, expr) })
}

// screenshot saves the whole page at width w as name-w.png in dir.
func (b *browserSession) screenshot(dir, name string, w int64) {
	b.t.Helper()
	h := int64(800)
	if w < 600 {
		h = 740
	}
	b.must(chromedp.EmulateViewport(w, h))
	// Let the layout (and the chart's ResizeObserver) settle on the new width.
	b.waitJS("layout at "+strconv.Itoa(int(w)), fmt.Sprintf(`new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(() => r(document.documentElement.clientWidth <= %d))))`, w))
	ctx, cancel := context.WithTimeout(b.ctx, uiTimeout)
	defer cancel()
	img, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%s-%d.png", name, w)), img, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// screenshots takes the page at 1280 and 375 px and returns to 1280.
func (b *browserSession) screenshots(dir, name string) {
	b.t.Helper()
	b.screenshot(dir, name, 375)
	b.screenshot(dir, name, 1280)
}

// waitDownload waits for a finished download named name and returns it.
func (b *browserSession) waitDownload(name string) []byte {
	b.t.Helper()
	path := filepath.Join(b.download, name)
	var data []byte
	wait.For(b.t, uiTimeout, "download "+name, func() bool {
		var err error
		data, err = os.ReadFile(path)
		return err == nil && len(data) > 0
	})
	return data
}

// clickEdge follows a short URL on an edge as a browser from addr and
// returns the answer's status.
func clickEdge(t *testing.T, edgeBase, code, addr string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, edgeBase+"/"+code, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("User-Agent", browserUA)
	req.Header.Set("X-Forwarded-For", addr)
	resp, err := edgeClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s on the edge: %v", code, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestDashboard drives the web dashboard in headless Chromium against a
// whole system (origin with collector, two edges, JetStream): sign-in with
// a wrong and a right key, create through the form, the list and its
// search, a javascript: URL refused next to its field, an HTML tag shown
// as text, the live counter moving on an edge click without a reload,
// Total clicks once complete_through passed the click, the QR download
// decoded, deactivation and the edge's 410, the overview, import (dry run
// and real, per-line errors), keys (mint, use, revoke), sign-out, and that
// the page asked no host but the origin. Screenshots of each page at 1280
// and 375 px go to LINKPOP_SCREENSHOTS (make screenshots: docs/dashboard)
// or a temporary directory.
func TestDashboard(t *testing.T) {
	chromium := chromiumPath()
	if chromium == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("chromium is not installed; .ci/run installs it with apt-get")
		}
		t.Skip("chromium is not installed (apt-get install chromium fonts-dejavu-core; .ci/run does): the browser test of the dashboard did not run")
	}
	shots := os.Getenv("LINKPOP_SCREENSHOTS")
	if shots == "" {
		shots = t.TempDir()
	} else if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}

	s := newSystem(t)
	edgeA := s.edges[0]
	ctx := context.Background()
	b := newBrowserSession(t, chromium, s.api.base)
	originURL, _ := url.Parse(s.api.base)

	// The page and its headers.
	resp, err := http.Get(s.api.base + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	csp := resp.Header.Get("Content-Security-Policy")
	if resp.StatusCode != 200 || !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") ||
		!strings.Contains(csp, "frame-ancestors 'none'") || resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("Referrer-Policy") == "" {
		t.Fatalf("GET /: %d, headers %v", resp.StatusCode, resp.Header)
	}

	// Sign in: a wrong key shows the API's error and keeps nothing.
	b.must(chromedp.Navigate(s.api.base + "/"))
	b.fill("API key", "lpk_wrong-key-0000000000")
	b.click("button", "Sign in")
	b.waitJS("the API's error for a wrong key", `(document.querySelector('[role=alert]')?.textContent || '').includes('unauthorized')`)
	if k := eval[string](b, `sessionStorage.getItem('linkpop.key') || ''`); k != "" {
		t.Fatalf("a refused key was kept: %q", k)
	}
	b.screenshots(shots, "sign-in")
	b.fill("API key", testAdminKey)
	b.click("button", "Sign in")
	b.exists("button", "Shorten")
	if k := eval[string](b, `sessionStorage.getItem('linkpop.key')`); k != testAdminKey {
		t.Fatalf("sessionStorage key %q", k)
	}

	// A javascript: URL is refused, the error shown next to Destination URL.
	b.fill("Destination URL", "javascript:alert(1)")
	b.click("button", "Shorten")
	b.waitJS("the field error of Destination URL", `(() => {
		const l = [...document.querySelectorAll('label')].find((l) => l.textContent.trim() === 'Destination URL');
		const input = l && l.control;
		if (!input || input.getAttribute('aria-invalid') !== 'true') return false;
		const errs = input.getAttribute('aria-describedby').split(' ').map((id) => document.getElementById(id)).filter((e) => e && !e.hidden && e.classList.contains('field-error'));
		return errs.length === 1 && errs[0].textContent.includes('url_scheme_not_allowed') && input.parentElement.contains(errs[0]);
	})()`)

	// Create through the form.
	target := "https://example.com/dashboard?from=browser&x=1"
	b.fill("Destination URL", target)
	b.click("button", "Shorten")
	shortURL := b.waitText("status", "Short URL", "the created short URL", func(s string) bool { return strings.HasPrefix(s, "http") })
	su, err := url.Parse(shortURL)
	if err != nil {
		t.Fatalf("Short URL %q: %v", shortURL, err)
	}
	code := strings.TrimPrefix(su.Path, "/")
	got, err := s.client.GetLink(ctx, code)
	if err != nil || got.URL != target || got.ShortURL != shortURL {
		t.Fatalf("created %q: %+v, %v", code, got, err)
	}

	// A custom code; the same code again is refused next to Custom code.
	b.fill("Destination URL", "https://example.com/custom")
	b.fill("Custom code", "dash-custom")
	b.click("button", "Shorten")
	b.waitText("status", "Short URL", "the custom short URL", func(s string) bool { return strings.HasSuffix(s, "/dash-custom") })
	b.fill("Destination URL", "https://example.com/custom-again")
	b.fill("Custom code", "dash-custom")
	b.click("button", "Shorten")
	b.waitJS("code_taken next to Custom code", `(() => {
		const l = [...document.querySelectorAll('label')].find((l) => l.textContent.trim() === 'Custom code');
		const input = l && l.control;
		if (!input || input.getAttribute('aria-invalid') !== 'true') return false;
		const e = input.parentElement.querySelector('.field-error');
		return !!e && !e.hidden && e.textContent.includes('code_taken') && input.getAttribute('aria-describedby').includes(e.id);
	})()`)

	// A link whose tag is HTML renders as text: no element, no dialog.
	s.api.create(t, client.CreateLink{URL: "https://example.com/xss", Code: "xss-tag", Tags: []string{xssTag}})
	b.must(chromedp.Reload())
	b.exists("link", "xss-tag")
	b.waitJS("the tag shown as text", fmt.Sprintf(`[...document.querySelectorAll('.tag')].some((e) => e.textContent === %q)`, xssTag))
	if n := eval[int](b, `document.querySelectorAll('main img, main [onerror]').length`); n != 0 {
		t.Fatalf("%d elements from the tag's HTML", n)
	}

	// Search narrows the list to the created link.
	b.fillRole("searchbox", "Search", code)
	b.exists("link", code)
	b.waitJS("only the searched link listed", `[...document.querySelectorAll('tbody a')].map((a) => a.textContent).join() === `+strconv.Quote(code))
	b.fillRole("searchbox", "Search", "")
	b.choose("Tag", xssTag)
	b.waitJS("the tag filter", `[...document.querySelectorAll('tbody a')].map((a) => a.textContent).join() === 'xss-tag'`)
	b.choose("Tag", "")
	b.screenshots(shots, "links")

	// The link's page: follow the short URL on an edge, and Live clicks
	// moves without a reload.
	b.click("link", code)
	b.waitText("status", "Live clicks", "the live counter connected", func(s string) bool { return s == "0" })
	eval[bool](b, `window.__sameDocument = true`)
	before := time.Now()
	if st := clickEdge(t, edgeA.base, code, "8.8.8.8"); st != http.StatusFound {
		t.Fatalf("edge answered %d for %s", st, code)
	}
	b.waitText("status", "Live clicks", "Live clicks at 1", func(s string) bool { return s == "1" })
	if !eval[bool](b, `window.__sameDocument === true`) {
		t.Fatal("the page reloaded to show the click")
	}

	// Total clicks once complete_through has passed the click.
	wait.For(t, convergeTimeout, "complete_through past the click", func() bool {
		st, err := s.client.Stats(ctx, code, client.StatsQuery{})
		return err == nil && st.CompleteThrough != nil && st.CompleteThrough.After(before)
	})
	b.choose("Range", "day")
	b.waitText("status", "Total clicks", "Total clicks at 1", func(s string) bool { return s == "1" })
	// A custom range after the click has none of it.
	b.choose("Range", "custom")
	eval[bool](b, `(() => {
		const p = (n) => String(n).padStart(2, '0');
		const f = (d) => d.getFullYear() + '-' + p(d.getMonth() + 1) + '-' + p(d.getDate()) + 'T' + p(d.getHours()) + ':' + p(d.getMinutes());
		const set = (name, d) => { [...document.querySelectorAll('label')].find((l) => l.textContent.trim() === name).control.value = f(d); };
		set('From', new Date(Date.now() + 3600e3));
		set('To', new Date(Date.now() + 7200e3));
		return true;
	})()`)
	b.click("button", "Apply")
	b.waitText("status", "Total clicks", "Total clicks at 0 in a later custom range", func(s string) bool { return s == "0" })
	b.choose("Range", "day")
	b.waitText("status", "Total clicks", "Total clicks at 1 again", func(s string) bool { return s == "1" })
	b.waitJS("complete up to shown", `(document.getElementById('complete')?.textContent || '').startsWith('Complete up to')`)
	b.waitJS("the chart drawn", `!!document.querySelector('.chart canvas')`)
	b.waitJS("the map shaded for US", `document.querySelector('.map path[data-country=US]')?.getAttribute('class') === 'q5'`)
	b.waitJS("US in the countries table", `[...document.querySelectorAll('[aria-label=Countries] td')].some((td) => td.textContent === 'US')`)
	b.screenshots(shots, "link")

	// Download the QR code (PNG) and decode it.
	b.click("button", "Download QR")
	png1 := b.waitDownload(code + ".png")
	img, err := png.Decode(bytes.NewReader(png1))
	if err != nil {
		t.Fatalf("downloaded QR: %v", err)
	}
	bmp, err := gozxing.NewBinaryBitmapFromImage(img)
	if err != nil {
		t.Fatal(err)
	}
	res, err := qrcode.NewQRCodeReader().Decode(bmp, map[gozxing.DecodeHintType]any{gozxing.DecodeHintType_PURE_BARCODE: true})
	if err != nil || res.GetText() != shortURL {
		t.Fatalf("QR decodes to %v (%v), want %q", res, err, shortURL)
	}
	b.choose("QR format", "svg")
	b.click("button", "Download QR")
	if svg := b.waitDownload(code + ".svg"); !bytes.Contains(svg, []byte("<svg")) {
		t.Fatalf("SVG download: %.80s", svg)
	}

	// Edit: new tags, saved with If-Match, shown on the page and in the API.
	eval[bool](b, `(document.querySelector('details.card').open = true)`)
	b.fill("Tags", "edited, dash")
	b.click("button", "Save changes")
	b.waitJS("the edited tags shown", `[...document.querySelectorAll('.facts .tag')].map((e) => e.textContent).join() === 'edited,dash'`)
	if l, err := s.client.GetLink(ctx, code); err != nil || strings.Join(l.Tags, ",") != "edited,dash" || l.Revision < 2 {
		t.Fatalf("after the edit: %+v %v", l, err)
	}

	// Deactivate (confirmed in a dialog): the edge answers 410.
	b.click("button", "Deactivate")
	b.click("button", "Yes, deactivate")
	b.waitJS("the link shown disabled", `document.querySelector('.status')?.textContent === 'disabled'`)
	wait.For(t, convergeTimeout, "410 from the edge", func() bool {
		return clickEdge(t, edgeA.base, code, "8.8.8.8") == http.StatusGone
	})

	// Overview: the link among the top links.
	b.must(chromedp.Navigate(s.api.base + "/#/overview"))
	b.exists("link", code)
	b.screenshots(shots, "overview")

	// Import: a dry run writes nothing; the import creates the valid
	// lines and lists the bad one.
	fixture, err := filepath.Abs("../../client/cli/testdata/links.csv")
	if err != nil {
		t.Fatal(err)
	}
	b.must(chromedp.Navigate(s.api.base + "/#/import"))
	b.upload(fixture)
	b.choose("Format", "csv")
	b.click("button", "Import")
	b.waitJS("the dry run done", `document.getElementById('import-status').textContent === '4 of 4 lines: 3 valid, 1 failed'`)
	b.waitJS("the bad line listed", `[...document.querySelectorAll('#import-errors tbody tr')].map((r) => r.cells[0].textContent + ' ' + r.cells[1].textContent).join() === '5 csv-bad'`)
	if _, err := s.client.GetLink(ctx, "csv-one"); !isStatusErr(err, http.StatusNotFound) {
		t.Fatalf("the dry run wrote csv-one: %v", err)
	}
	eval[bool](b, `document.getElementById('dry-run').click(), true`)
	b.click("button", "Import")
	b.waitJS("the import done", `document.getElementById('import-status').textContent === '4 of 4 lines: 3 created, 1 failed'`)
	b.screenshots(shots, "import")
	for _, c := range []string{"csv-one", "csv-two"} {
		if _, err := s.client.GetLink(ctx, c); err != nil {
			t.Fatalf("imported %s: %v", c, err)
		}
	}

	// The other formats' readers, by dry runs of the CLI's fixtures:
	// lines read, valid, and the lines refused.
	eval[bool](b, `(document.getElementById('dry-run').checked = true)`)
	for _, c := range []struct{ file, format, status, bad string }{
		{"links.jsonl", "jsonl", "5 of 5 lines: 3 valid, 2 failed", "5 jl-bad,6 "},
		{"shlink.csv", "shlink", "2 of 2 lines: 2 valid, 0 failed", ""},
		{"golink.jsonl", "golink", "4 of 4 lines: 1 valid, 3 failed", "1 cs,3 chan,4 a.b"},
		{"bitly.csv", "bitly", "2 of 2 lines: 2 valid, 0 failed", ""},
		{"yourls.csv", "yourls", "2 of 2 lines: 2 valid, 0 failed", ""},
	} {
		path, err := filepath.Abs("../../client/cli/testdata/" + c.file)
		if err != nil {
			t.Fatal(err)
		}
		eval[bool](b, `(document.getElementById('import-status').textContent = '', true)`)
		b.upload(path)
		b.choose("Format", c.format)
		b.click("button", "Import")
		b.waitJS("dry run of "+c.file, `document.getElementById('import-status').textContent === `+strconv.Quote(c.status))
		if got := eval[string](b, `[...document.querySelectorAll('#import-errors tbody tr')].map((r) => r.cells[0].textContent + ' ' + r.cells[1].textContent).join()`); got != c.bad {
			t.Errorf("dry run of %s: bad lines %q, want %q", c.file, got, c.bad)
		}
	}

	// Keys: mint one with links:read, use it, revoke it.
	b.must(chromedp.Navigate(s.api.base + "/#/keys"))
	b.fill("Name", "dashboard-test")
	b.click("button", "Mint key")
	secret := b.waitText("status", "New API key", "the new key shown once", func(s string) bool { return s != "" })
	kc, err := client.New(client.Config{BaseURL: s.api.base, Key: secret})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kc.ListLinks(ctx, client.ListOptions{Limit: 1}); err != nil {
		t.Fatalf("the minted key: %v", err)
	}
	b.screenshots(shots, "keys")
	b.click("button", "Revoke dashboard-test")
	wait.For(t, convergeTimeout, "the revoked key refused", func() bool {
		_, err := kc.ListLinks(ctx, client.ListOptions{Limit: 1})
		return isStatusErr(err, http.StatusUnauthorized)
	})

	// Sign out clears the key.
	b.click("button", "Sign out")
	b.exists("button", "Sign in")
	if k := eval[string](b, `sessionStorage.getItem('linkpop.key') || ''`); k != "" {
		t.Fatalf("signed out, the key is still kept: %q", k)
	}
	if c := eval[string](b, `document.cookie`); c != "" {
		t.Fatalf("cookies: %q", c)
	}

	// Every request went to the origin, none carried the key in its URL;
	// nothing logged an error, broke the CSP or opened a dialog.
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.requests) == 0 {
		t.Fatal("no request recorded")
	}
	var foreign []string
	for _, r := range b.requests {
		u, err := url.Parse(r)
		if err != nil || (u.Scheme != "data" && u.Scheme != "blob" && u.Host != originURL.Host) {
			foreign = append(foreign, r)
		}
		if strings.Contains(r, testAdminKey) || strings.Contains(r, secret) {
			t.Errorf("a key in a request URL: %s", r)
		}
	}
	if len(foreign) > 0 {
		t.Errorf("requests to hosts other than the origin: %q", foreign)
	}
	if len(b.problems) > 0 {
		t.Errorf("page problems: %q", b.problems)
	}
	if len(b.dialogs) > 0 {
		t.Errorf("dialogs opened: %q", b.dialogs)
	}
	t.Logf("%d requests, all to %s; screenshots in %s", len(b.requests), originURL.Host, shots)
}

// isStatusErr reports whether err is the API's error answer with status.
func isStatusErr(err error, status int) bool {
	var ae *client.Error
	return errors.As(err, &ae) && ae.Status == status
}
