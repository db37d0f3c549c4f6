#!/usr/bin/env python3
"""A real browser for the Control Room's end-to-end test (`kernel_control_room`):
Debian's chromium, driven with Playwright (from PyPI; its own browser
downloads are never used).

It reads one JSON command per line on standard input and answers each with
one JSON line on standard output, so the flow and its assertions stay in the
Rust test and this file only knows how to drive a page. An answer is the
operation's result, or {"error": "..."} when it failed.

Operations (`op`):
  verify_tls {}                    the UI's certificate chains to --ca and names the host
  goto {path}                      -> {status, url, title, text}  (text: innerText of <main>)
  signin {username, password}      the sign-in form; -> as goto, plus {cookies}
  fill {selector, value}
  select {selector, value}
  click {selector, navigate=true}  -> as goto once the page it leads to has loaded
  text {selector}                  -> {text}  (innerText of the first match)
  count {selector}                 -> {count}
  all {selector, attrs=[]}         -> {items: [{text, <attr>: value...}]}
  csrf {}                          -> {csrf}  (the page's hidden csrf input)
  cookies {}                       -> {cookies: [name...]}  (the context's, HttpOnly too)
  get {path}                       -> {status, headers, body}  with the context's cookies
  post {path, fields}              -> {status, location, body}  a form POST with the context's
                                      cookies, redirects not followed
  wait_text {selector, contains, timeout_s}   -> {text}
  screenshot {path, full_page=true}
  console_errors {}                -> {errors: [...]}  console errors, page errors, CSP violations
  new_context {}                   a fresh context (no cookies): another user
  close {}
"""

import argparse
import json
import socket
import ssl
import sys
import urllib.parse

from playwright.sync_api import sync_playwright

VIEWPORT = {"width": 1366, "height": 850}
# Not UTC, so a check can see that times are shown in the viewer's zone.
TIME_ZONE = "America/New_York"


def log(*args):
    print("control_room:", *args, file=sys.stderr, flush=True)


class Driver:
    def __init__(self, playwright, base, ca, chromium):
        self.base = base.rstrip("/")
        self.ca = ca
        self.browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        self.errors = []
        self.context = None
        self.page = None
        self.new_context()

    def new_context(self, _cmd=None):
        if self.context is not None:
            self.context.close()
        # The gateway's certificate is made by its own CA, which this
        # browser does not trust; verify_tls checks the chain instead.
        self.context = self.browser.new_context(
            viewport=VIEWPORT, timezone_id=TIME_ZONE, locale="en-US", ignore_https_errors=True
        )
        # Chromium logs a blocked resource as a console error; the event also
        # names the directive, and the page's own CSP does not apply to this.
        self.context.add_init_script(
            "document.addEventListener('securitypolicyviolation', e =>"
            " console.error('CSP violation: ' + e.violatedDirective + ' blocked ' + e.blockedURI));"
        )
        self.page = self.context.new_page()
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self.errors.append({"kind": "pageerror", "text": str(e), "url": self.page.url}))
        # data-confirm forms ask window.confirm: a user who clicks means it.
        self.page.on("dialog", lambda d: d.accept())
        return {}

    def _console(self, msg):
        if msg.type in ("error", "warning") and (msg.type == "error" or "Content Security Policy" in msg.text):
            source = (msg.location or {}).get("url", "")
            self.errors.append({"kind": "console." + msg.type, "text": msg.text, "url": self.page.url, "source": source})

    def url(self, path):
        return self.base + path

    def shape(self, response):
        main = self.page.locator("main")
        text = main.first.inner_text() if main.count() else self.page.locator("body").inner_text()
        return {
            "status": response.status if response is not None else None,
            "url": self.page.url,
            "path": urllib.parse.urlsplit(self.page.url).path,
            "title": self.page.title(),
            "text": text,
        }

    def verify_tls(self, _cmd):
        parts = urllib.parse.urlsplit(self.base)
        context = ssl.create_default_context(cafile=self.ca)
        context.check_hostname = True
        context.verify_mode = ssl.CERT_REQUIRED
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname=parts.hostname) as tls:
                cert = tls.getpeercert()
                return {
                    "verified": True,
                    "version": tls.version(),
                    "subject_alt_names": [v for _, v in cert.get("subjectAltName", ())],
                    "issuer": [v for rdn in cert.get("issuer", ()) for _, v in rdn],
                }

    def goto(self, cmd):
        return self.shape(self.page.goto(self.url(cmd["path"]), wait_until="load"))

    def signin(self, cmd):
        self.goto({"path": "/signin"})
        self.page.fill("#username", cmd["username"])
        self.page.fill("#password", cmd["password"])
        out = self.click({"selector": "form[action='/signin'] button[type=submit]"})
        out["cookies"] = self.cookies({})["cookies"]
        return out

    def fill(self, cmd):
        self.page.fill(cmd["selector"], cmd["value"])
        return {}

    def select(self, cmd):
        self.page.select_option(cmd["selector"], cmd["value"])
        return {}

    def click(self, cmd):
        if not cmd.get("navigate", True):
            self.page.click(cmd["selector"])
            return {}
        with self.page.expect_navigation(wait_until="load") as nav:
            self.page.click(cmd["selector"])
        return self.shape(nav.value)

    def text(self, cmd):
        return {"text": self.page.locator(cmd["selector"]).first.inner_text()}

    def count(self, cmd):
        return {"count": self.page.locator(cmd["selector"]).count()}

    def all(self, cmd):
        items = []
        for el in self.page.locator(cmd["selector"]).all():
            item = {"text": el.inner_text()}
            for attr in cmd.get("attrs", []):
                item[attr] = el.get_attribute(attr)
            items.append(item)
        return {"items": items}

    def csrf(self, _cmd):
        return {"csrf": self.page.locator("input[name=csrf]").first.get_attribute("value")}

    def cookies(self, _cmd):
        return {"cookies": sorted(c["name"] for c in self.context.cookies())}

    def get(self, cmd):
        r = self.context.request.get(self.url(cmd["path"]))
        return {"status": r.status, "headers": r.headers, "body": r.text()}

    def post(self, cmd):
        r = self.context.request.post(self.url(cmd["path"]), form=cmd.get("fields", {}), max_redirects=0)
        return {"status": r.status, "location": r.headers.get("location", ""), "body": r.text()}

    def wait_text(self, cmd):
        locator = self.page.locator(cmd["selector"]).first
        wanted = cmd["contains"]
        locator.wait_for(timeout=cmd.get("timeout_s", 30) * 1000)
        self.page.wait_for_function(
            "([selector, wanted]) => { const el = document.querySelector(selector); return el && el.innerText.includes(wanted); }",
            arg=[cmd["selector"], wanted],
            timeout=cmd.get("timeout_s", 30) * 1000,
        )
        return {"text": locator.inner_text()}

    def screenshot(self, cmd):
        self.page.screenshot(path=cmd["path"], full_page=cmd.get("full_page", True))
        return {}

    def console_errors(self, _cmd):
        return {"errors": self.errors}

    def close(self, _cmd):
        self.context.close()
        self.browser.close()
        return {}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True, help="the UI's URL (DATA_DIR/ui-url)")
    parser.add_argument("--ca", required=True, help="the gateway's CA (DATA_DIR/ca.pem)")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    with sync_playwright() as p:
        driver = Driver(p, args.base, args.ca, args.chromium)
        print(json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            if not line.strip():
                continue
            cmd = json.loads(line)
            op = cmd.get("op", "")
            handler = getattr(driver, op, None) if op in OPS else None
            try:
                if handler is None:
                    raise ValueError(f"unknown op {op!r}")
                out = handler(cmd)
            except Exception as e:  # the test reports it with the command
                log(f"{op} failed: {e!r}")
                out = {"error": f"{type(e).__name__}: {e}"}
            print(json.dumps(out), flush=True)
            if op == "close":
                return


OPS = {
    "verify_tls", "goto", "signin", "fill", "select", "click", "text", "count", "all", "csrf", "cookies",
    "get", "post", "wait_text", "screenshot", "console_errors", "new_context", "close",
}

if __name__ == "__main__":
    main()
