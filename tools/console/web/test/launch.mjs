// launchChromium starts Debian's Chromium (CHROMIUM, /usr/bin/chromium) for the
// browser tests, with a fresh profile under outDir every run and no background
// traffic: this machine's network is closed.
import { chromium } from "playwright-core";
import { mkdtempSync } from "node:fs";
import { join } from "node:path";

export function launchChromium(outDir) {
  return chromium.launchPersistentContext(mkdtempSync(join(outDir, "chromium-")), {
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1200, height: 800 },
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
}
