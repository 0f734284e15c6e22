// Package browsertest drives Debian's Chromium, headless, from Go tests with
// chromedp, so the web page is tested in a real browser against real nodes:
// it finds the browser, collects the page's console errors and uncaught
// exceptions, waits on conditions of the page's DOM with deadlines sized for
// a busy machine, and saves screenshots.
//
// Chromium is /usr/bin/chromium (Debian's package "chromium"), or the path in
// DISCOVERD_CHROMIUM. Without it a test fails when CI is set (CI must run the
// browser tests; .ci/run installs the package) and is skipped elsewhere, with
// the command that installs it.
//
// Only tests import it. It may import the standard library and chromedp.
package browsertest
