// Drives the porthole console in Debian's Chromium with playwright-core; run by the
// Go test TestBrowser (tools/console/browser_test.go), which starts the console,
// tunneld and the devices. Input in the environment:
//   CONSOLE_URL   the URL the console printed (its access token after #token=)
//   CHROMIUM      the browser executable (/usr/bin/chromium)
//   OUT_DIR       where screenshots and the Chromium profile go
//   THING         the device to open a tunnel to and log in to with the pre-selected key
//   THING2        optional: a second device, first a wrong password, then a right one
//   PASSWORD2     the right password for THING2
//   THING3        optional: a device whose stored host key differs: the warning must
//                 show, and trusting the new key must log in
// It prints one JSON line of results and exits non-zero on the first failure.
import { launchChromium } from "./launch.mjs";
import { join } from "node:path";

const env = (k, d) => process.env[k] ?? d;
const url = env("CONSOLE_URL");
const outDir = env("OUT_DIR", "/tmp");
const thing = env("THING", "lab-device");
const thing2 = env("THING2", "");
const thing3 = env("THING3", "");
const step = (s) => console.error(`[browser] ${new Date().toISOString()} ${s}`);
const results = { screenshots: [] };

const browser = await launchChromium(outDir);
const fail = async (page, msg) => {
  if (page) {
    const p = join(outDir, "failure.png");
    await page.screenshot({ path: p }).catch(() => {});
    console.error(`[browser] failure screenshot ${p}`);
  }
  console.error("[browser] FAIL: " + msg);
  await browser.close();
  process.exit(1);
};

let page;
try {
  page = browser.pages()[0] || (await browser.newPage());
  const consoleErrors = [];
  page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
  page.on("pageerror", (e) => consoleErrors.push(String(e)));

  step("open the console");
  if (!new URL(url).hash.startsWith("#token=")) await fail(null, "the printed URL has no #token=: " + url);
  await page.goto(url);
  await page.locator("#open-form").waitFor({ state: "visible" });
  // The page took the token from the fragment, keeps it in sessionStorage and took
  // it out of the address bar; no cookie holds it (a cookie goes to every port).
  if (page.url().includes("token=")) await fail(page, "the token stayed in the address bar: " + page.url());
  const cookies = await browser.cookies();
  if (cookies.length) await fail(page, "the console set cookies: " + JSON.stringify(cookies.map((c) => c.name)));
  if (!(await page.evaluate(() => sessionStorage.getItem("porthole-console-token")))) {
    await fail(page, "the page did not keep the access token in sessionStorage");
  }

  const openTunnel = async (name) => {
    step(`open a tunnel to ${name}`);
    await page.click("#tab-tunnels");
    await page.fill("#open-thing", name);
    await page.fill("#open-services", "SSH");
    await page.click("#open-submit");
    const row = page.locator(`#tunnel-rows tr[data-thing="${name}"]`).last();
    await row.locator("td.state-ready").waitFor({ timeout: 30000 });
    return row;
  };
  const login = async (row, how) => {
    await page.click("#tab-tunnels");
    await row.locator("button.terminal").click();
    await page.locator("#login-form").waitFor({ state: "visible" });
    if (how.password !== undefined) {
      await page.check("#auth-password");
      await page.fill("#login-password", how.password);
    } else if (how.preselected) {
      if (!(await page.isChecked("#auth-key"))) await fail(page, "the key login is not pre-selected");
    } else {
      await page.check("#auth-key");
    }
    await page.click("#login-submit");
    return page.locator("section.pane.active");
  };
  const screen = (pane) => pane.locator(".xterm-rows").innerText();
  const waitScreen = async (pane, re, what, timeout = 20000) => {
    const deadline = Date.now() + timeout;
    for (;;) {
      const text = await screen(pane);
      const m = text.match(re);
      if (m) return m;
      if (Date.now() > deadline) await fail(page, `no ${what} on the terminal; it shows:\n${text}\nstatus: ${await pane.locator(".status").innerText()}`);
      await page.waitForTimeout(100);
    }
  };
  const type = async (pane, line) => {
    await pane.locator(".xterm-helper-textarea").focus();
    await page.keyboard.type(line);
    await page.keyboard.press("Enter");
  };
  const lastSize = async (pane) => {
    const text = await screen(pane);
    const all = [...text.matchAll(/^(\d+) (\d+)\s*$/gm)];
    return all.length ? all[all.length - 1][0].trim() : "";
  };

  const row = await openTunnel(thing);
  step(`log in to ${thing} with the pre-selected key`);
  const pane = await login(row, { preselected: true });
  await pane.locator(".status", { hasText: "host key of " + thing }).waitFor({ timeout: 30000 });
  results.hostKeyStatus = await pane.locator(".status").innerText();

  await waitScreen(pane, /[#$] *$/m, "a shell prompt");
  step("uname -m; echo $((6*7)); echo hello-from-browser");
  // One command at a time, each after the previous one's output: keys typed
  // while a command runs are echoed by the terminal into its output (typeahead),
  // as on any terminal, and "ex86_64" is not an answer to uname -m.
  await type(pane, "uname -m");
  results.uname = (await waitScreen(pane, /^(x86_64|aarch64|armv7l|mips|i686)\s*$/m, "uname -m output"))[1];
  await type(pane, "echo $((6*7))");
  await waitScreen(pane, /^42\s*$/m, "42");
  await type(pane, "echo hello-from-browser");
  await waitScreen(pane, /^hello-from-browser\s*$/m, "hello-from-browser");
  results.answer = "42";

  step("stty size follows the window");
  await type(pane, "stty size");
  await waitScreen(pane, /^\d+ \d+\s*$/m, "stty size output");
  results.sizeBefore = await lastSize(pane);
  await page.setViewportSize({ width: 760, height: 520 });
  await page.waitForTimeout(500);
  await type(pane, "stty size");
  const deadline = Date.now() + 10000;
  for (;;) {
    results.sizeAfter = await lastSize(pane);
    if (results.sizeAfter && results.sizeAfter !== results.sizeBefore) break;
    if (Date.now() > deadline) await fail(page, `stty size did not change: ${results.sizeBefore} → ${results.sizeAfter}`);
    await page.waitForTimeout(100);
  }
  await page.setViewportSize({ width: 1200, height: 800 });
  await page.waitForTimeout(300);

  // A paste far over what the SSH channel and the console hold, to a device that
  // reads nothing for a while: all of it arrives, in step with the device, and
  // the page says meanwhile how much is left to send.
  const pasteSize = 8 << 20;
  step(`paste ${pasteSize} bytes while the device reads nothing for 3 s`);
  await type(pane, `stty raw -echo; echo PASTE-READY; sleep 3; head -c ${pasteSize} | wc -c | sed s/^/COUNT=/; stty sane`);
  await waitScreen(pane, /PASTE-READY\s*$/m, "PASTE-READY");
  await page.evaluate((n) => {
    const ta = document.querySelector("section.pane.active .xterm-helper-textarea");
    const dt = new DataTransfer();
    dt.setData("text/plain", "x".repeat(n));
    ta.dispatchEvent(new ClipboardEvent("paste", { clipboardData: dt, bubbles: true, cancelable: true }));
  }, pasteSize);
  const note = pane.locator(".paste", { hasText: "to go" });
  await note.waitFor({ state: "visible", timeout: 10000 });
  results.pasteNote = await note.innerText();
  const pasteShot = join(outDir, "console-paste.png");
  await page.screenshot({ path: pasteShot });
  results.screenshots.push(pasteShot);
  results.paste = (await waitScreen(pane, /COUNT=(\d+)/m, "the pasted byte count", 60000))[1];
  await pane.locator(".paste").waitFor({ state: "hidden", timeout: 10000 });
  step(`the device counted ${results.paste} bytes`);
  await type(pane, "echo screenshot-$((6*7))");
  await waitScreen(pane, /^screenshot-42\s*$/m, "the echo");

  if (thing2) {
    const row2 = await openTunnel(thing2);
    step(`log in to ${thing2} with a wrong password`);
    const bad = await login(row2, { password: "not-the-password" });
    await bad.locator('.status.end-auth').waitFor({ timeout: 30000 });
    results.wrongPassword = await bad.locator(".status").innerText();
    step(`log in to ${thing2} with the right password, a second terminal`);
    const good = await login(row2, { password: env("PASSWORD2") });
    await good.locator(".status", { hasText: "host key of " + thing2 }).waitFor({ timeout: 30000 });
    await waitScreen(good, /[#$] *$/m, "a shell prompt");
    await type(good, "echo second-$((2*3))-device");
    await waitScreen(good, /^second-6-device\s*$/m, "output on the second device");
    results.tabs = await page.locator("#tabs .tab").count();
  }

  if (thing3) {
    const row3 = await openTunnel(thing3);
    step(`log in to ${thing3}, whose host key changed`);
    const p3 = await login(row3, {});
    const warning = p3.locator(".warning");
    await warning.waitFor({ state: "visible", timeout: 30000 });
    results.hostKeyWarning = await warning.locator(".warning-text").innerText();
    await p3.locator(".status.end-hostkey").waitFor({ timeout: 10000 });
    const shot = join(outDir, "console-hostkey-warning.png");
    await page.screenshot({ path: shot });
    results.screenshots.push(shot);
    step("trust the new key");
    await warning.locator("button.trust").click();
    await p3.locator(".status", { hasText: "new host key of " + thing3 + " was accepted" }).waitFor({ timeout: 30000 });
    await waitScreen(p3, /[#$] *$/m, "a shell prompt");
    await type(p3, "echo trusted-$((3*3))");
    await waitScreen(p3, /^trusted-9\s*$/m, "output after trusting the key");
    results.hostKeyTrusted = true;
  }

  step("screenshot");
  await page.locator(`#tabs .tab[data-thing="${thing}"]`).first().click();
  await page.waitForTimeout(300);
  const shot = join(outDir, "console-terminal.png");
  await page.screenshot({ path: shot });
  results.screenshots.push(shot);

  step(`close the tunnel to ${thing}`);
  await page.click("#tab-tunnels");
  await row.locator("button.close").click();
  await row.locator("td.state-closed").waitFor({ timeout: 30000 }).catch(() => {});
  await page.locator(`#tabs .tab[data-thing="${thing}"]`).first().click();
  const closed = page.locator(`section.pane[data-thing="${thing}"]`).first();
  await closed.locator(".status.end-tunnel").waitFor({ timeout: 30000 });
  results.closedMessage = await closed.locator(".status").innerText();
  const shot2 = join(outDir, "console-closed.png");
  await page.screenshot({ path: shot2 });
  results.screenshots.push(shot2);
  await page.click("#tab-tunnels");
  await page.locator(`#tunnel-rows tr[data-thing="${thing}"] td.state-closed`).waitFor({ timeout: 10000 });
  const shot3 = join(outDir, "console-tunnels.png");
  await page.screenshot({ path: shot3 });
  results.screenshots.push(shot3);
  results.consoleErrors = consoleErrors;
  console.log(JSON.stringify(results));
} catch (e) {
  await fail(page, e.stack || String(e));
}
await browser.close();
