// The tunnels table, refreshed every 1.5 s, must keep what the operator is
// doing in it: the keyboard focus on a row's button, a selection of the tunnel
// id (to copy it), a click in progress. Input: CONSOLE_URL, CHROMIUM, OUT_DIR,
// THING. Prints one JSON line.
import { launchChromium } from "./launch.mjs";

const env = (k, d) => process.env[k] ?? d;
const browser = await launchChromium(env("OUT_DIR", "/tmp"));
const results = {};
try {
  const page = browser.pages()[0] || (await browser.newPage());
  await page.goto(env("CONSOLE_URL"));
  await page.locator("#open-form").waitFor({ state: "visible" });
  const thing = env("THING");
  await page.fill("#open-thing", thing);
  await page.click("#open-submit");
  const row = page.locator(`#tunnel-rows tr[data-thing="${thing}"]`).last();
  await row.locator("td.state-ready").waitFor({ timeout: 30000 });

  // Keyboard: focus the row's "Close tunnel" button, as Tab does.
  await row.locator("button.close").focus();
  await page.waitForTimeout(2000);
  results.focusAfter = await page.evaluate(() => document.activeElement.tagName + "." + document.activeElement.className);

  // Select the tunnel id, to copy it.
  await page.evaluate(() => {
    const td = document.querySelector("#tunnel-rows tr td:nth-child(2)");
    const r = document.createRange();
    r.selectNodeContents(td);
    getSelection().removeAllRanges();
    getSelection().addRange(r);
  });
  results.selectedBefore = await page.evaluate(() => getSelection().toString());
  await page.waitForTimeout(2000);
  results.selectedAfter = await page.evaluate(() => getSelection().toString());

  // A click on "Terminal" during which the table is refreshed.
  const box = await row.locator("button.terminal").boundingBox();
  await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
  await page.mouse.down();
  await page.waitForTimeout(1600);
  await page.mouse.up();
  results.loginShown = await page.locator("#login-form").isVisible();
} catch (e) {
  results.error = String(e);
}
console.log(JSON.stringify(results));
await browser.close();
