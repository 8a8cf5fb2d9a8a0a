// Copies the third-party browser files the console serves from node_modules into
// vendor/, which Go embeds (tools/console/assets.go). vendor/ is generated and
// gitignored except its README; run through `make console-assets`. With a
// directory argument it copies there instead (the browser test does, so that it
// never rewrites files a concurrent Go build may be embedding).
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const files = {
  "xterm.js": "node_modules/@xterm/xterm/lib/xterm.js",
  "xterm.css": "node_modules/@xterm/xterm/css/xterm.css",
  "addon-fit.js": "node_modules/@xterm/addon-fit/lib/addon-fit.js",
};
const out = process.argv[2] ? resolve(process.argv[2]) : join(here, "vendor");
mkdirSync(out, { recursive: true });
for (const [name, from] of Object.entries(files)) {
  copyFileSync(join(here, from), join(out, name));
}
console.log("vendor: " + Object.keys(files).join(", "));
