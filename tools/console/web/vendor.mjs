// Copies the third-party browser files the console serves from node_modules into
// vendor/, which Go embeds (tools/console/assets.go). vendor/ is generated and
// gitignored except its README; run through `make console-assets`. With a
// directory argument it copies there instead (the browser test does, so that it
// never rewrites files a concurrent Go build may be embedding).
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
// Each file with its package's LICENSE: the minified xterm.js and addon-fit.js
// carry no notice, and MIT wants the copyright and permission notice in every
// copy (the console's binaries embed these, and every browser is sent them).
const files = {
  "xterm.js": ["node_modules/@xterm/xterm/lib/xterm.js", "node_modules/@xterm/xterm/LICENSE"],
  "xterm.css": ["node_modules/@xterm/xterm/css/xterm.css", "node_modules/@xterm/xterm/LICENSE"],
  "addon-fit.js": ["node_modules/@xterm/addon-fit/lib/addon-fit.js", "node_modules/@xterm/addon-fit/LICENSE"],
};
// The copyright lines of others' code that a package bundles into its file, which
// its LICENSE does not name (its sources do): under the same MIT terms.
const bundled = {
  "xterm.js": [
    "Copyright (c) 2011 Fabrice Bellard (xterm.js began as a fork of his vt100 for jslinux, with his permission)",
    "Copyright (c) Microsoft Corporation (src/vs: parts of Visual Studio Code, MIT License)",
  ],
};
const out = process.argv[2] ? resolve(process.argv[2]) : join(here, "vendor");
mkdirSync(out, { recursive: true });
for (const [name, [from, license]] of Object.entries(files)) {
  let text = readFileSync(join(here, license), "utf8").trimEnd();
  if (bundled[name]) {
    text = text.replace(/\n\n/, "\n" + bundled[name].join("\n") + "\n\n");
  }
  text = text.replaceAll("*/", "* /");
  const banner = "/*! @license MIT: " + license.replace(/^node_modules\//, "").replace(/\/LICENSE$/, "") + "\n\n" + text + "\n*/\n";
  writeFileSync(join(out, name), Buffer.concat([Buffer.from(banner), readFileSync(join(here, from))]));
}
console.log("vendor: " + Object.keys(files).join(", "));
