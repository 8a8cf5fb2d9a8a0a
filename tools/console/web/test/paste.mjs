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
  const keys = pane.locator(".xterm-helper-textarea");
  // Readline reading the keyboard: a command it read has run and its prompt
  // is back. Readline puts the terminal in raw mode before it turns bracketed
  // paste on (\e[?2004h) and draws the prompt, so the page pastes with the
  // markers and bash reads the paste in readline. (A ^L, then the prompt alone
  // on the first line, did not tell: with no banner that is the screen before
  // the ^L too.)
  await keys.focus();
  await page.keyboard.type("echo ready-$((3*3))");
  await page.keyboard.press("Enter");
  await waitScreen(/^ready-9\s*\n[^\n]*[#$] *\s*$/m, "the ready line and a fresh prompt");

  step("paste a clipboard that carries the end of a bracketed paste");
  await page.evaluate(() => {
    const ta = document.querySelector("section.pane.active .xterm-helper-textarea");
    const dt = new DataTransfer();
    dt.setData("text/plain", "echo harmless\x1b[201~\recho pwned-$((6*7))\r");
    ta.dispatchEvent(new ClipboardEvent("paste", { clipboardData: dt, bubbles: true, cancelable: true }));
  });
  // The paste is on the screen (as text on the command line, or run), and
  // has had time to run if it can.
  await waitScreen(/echo pwned-/, "the pasted text");
  await page.waitForTimeout(1500);
  // Whatever was left on the command line goes; then a marker shows that the
  // shell has read everything before it. The marker waits for the prompt
  // after ^C: a key that reached bash 5.2 before it had handled the ^C's
  // SIGINT was lost and the pasted lines stayed on the command line, and the
  // marker's Enter ran them ("cho: command not found", pwned-42, marker-4:
  // CI, on a loaded machine).
  await keys.focus();
  await page.keyboard.press("Control+C");
  await waitScreen(/\^C\s*\n[^\n]*[#$] *\s*$/, "a fresh prompt after ^C");
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
