// A clipboard a web page wrote (pastejacking) must not leave the shell's bracketed
// paste: run by the Go test TestBrowserPasteStaysBracketed
// (tools/console/browser_test.go). Input in the environment: CONSOLE_URL,
// CHROMIUM, OUT_DIR and THING, as for browser.mjs. It prints one JSON line of
// results and exits non-zero on a failure of its own.
import { launchChromium } from "./launch.mjs";

const env = (k, d) => process.env[k] ?? d;
const outDir = env("OUT_DIR", "/tmp");
const thing = env("THING", "lab-device");
const step = (s) => console.error(`[paste] ${new Date().toISOString()} ${s}`);
const results = {};

const browser = await launchChromium(outDir);
const fail = async (msg) => {
  console.error("[paste] FAIL: " + msg);
  await browser.close();
  process.exit(1);
};
try {
  const page = browser.pages()[0] || (await browser.newPage());
  await page.goto(env("CONSOLE_URL"));
  await page.locator("#open-form").waitFor({ state: "visible" });
  step(`open a tunnel to ${thing} and log in`);
  await page.fill("#open-thing", thing);
  await page.click("#open-submit");
  const row = page.locator(`#tunnel-rows tr[data-thing="${thing}"]`).last();
  await row.locator("td.state-ready").waitFor({ timeout: 30000 });
  await row.locator("button.terminal").click();
  await page.click("#login-submit");
  const pane = page.locator("section.pane.active");
  const screen = () => pane.locator(".xterm-rows").innerText();
  const waitScreen = async (re, what) => {
    for (const deadline = Date.now() + 20000; ;) {
      const text = await screen();
      if (re.test(text)) return;
      if (Date.now() > deadline) await fail(`no ${what}; the terminal shows:\n${text}`);
      await page.waitForTimeout(100);
    }
  };
  await waitScreen(/[#$] *$/m, "shell prompt");
  // bash's readline turns bracketed paste on with its prompt (\e[?2004h).
  await page.waitForFunction(() => {
    const t = document.querySelector("section.pane.active .xterm-helper-textarea");
    return t !== null;
  });
  // The prompt on the screen is not readline reading yet: on a loaded machine
  // (CI, every package's tests at once) the paste reached bash's terminal
  // before readline had it in raw mode, and the terminal's own line editing
  // ran the pasted lines. ^L tells them apart: readline clears the screen and
  // redraws its prompt on the first line; the terminal would echo "^L" after
  // the prompt, and readline clears it once it reads it.
  await pane.locator(".xterm-helper-textarea").focus();
  await page.keyboard.press("Control+L");
  await waitScreen(/^[^\n]*[#$] *\s*$/, "the prompt alone, redrawn by readline");

  step("paste a clipboard that carries the end of a bracketed paste");
  await page.evaluate(() => {
    const ta = document.querySelector("section.pane.active .xterm-helper-textarea");
    const dt = new DataTransfer();
    dt.setData("text/plain", "echo harmless\x1b[201~\recho pwned-$((6*7))\r");
    ta.dispatchEvent(new ClipboardEvent("paste", { clipboardData: dt, bubbles: true, cancelable: true }));
  });
  await page.waitForTimeout(1500);
  // Whatever was left on the command line goes; then a marker shows that the
  // shell has read everything before it.
  await pane.locator(".xterm-helper-textarea").focus();
  await page.keyboard.press("Control+C");
  await page.keyboard.type("echo marker-$((2*2))");
  await page.keyboard.press("Enter");
  await waitScreen(/^marker-4\s*$/m, "the marker");
  const text = await screen();
  results.executed = /^pwned-42\s*$/m.test(text);
  results.screen = text;
  console.log(JSON.stringify(results));
} catch (e) {
  await fail(e.stack || String(e));
}
await browser.close();
